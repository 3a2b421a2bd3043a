"""optout: Concep email campaign logs in Dataverse → opt-outs and bounces on the recipient.

The package is a functional core (:mod:`optout_core.domain`: decoding, routing, update building, pure
functions over plain data) with thin adapters at the edge (:mod:`optout_core.dataverse`,
:mod:`optout_core.servicebus`). ``function_app.py`` binds the Azure Functions triggers to the handlers in
:mod:`optout_core.app`; :mod:`optout_core.cli` is the administrator's command line (not deployed).
"""

__version__ = "0.1.0"
