"""optout: Concep email campaign logs in Dataverse → opt-outs and bounces on the recipient.

The package is a functional core (parsing, routing, update building: pure functions over plain data)
with thin adapters at the edge (Service Bus, the Dataverse Web API). ``function_app.py`` binds the
Azure Functions triggers to :mod:`optout_core.pipeline`.
"""

__version__ = "0.1.0"
