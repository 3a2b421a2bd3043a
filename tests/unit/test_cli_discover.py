"""discover: which table is the campaign log, and the settings it proposes — pure over metadata."""

from optout_core.cli.discover import looks_like, option_routes, propose, rank, recipient_columns, type_list
from optout_core.cli.schema import Column, Option, Table, kind_of, label_text, localized_label, options_of
from optout_core.domain.settings import Settings

CONCEP_TYPES = (
    Option(100000000, "Sent"),
    Option(100000001, "Open"),
    Option(100000003, "Spam Report"),
    Option(100000004, "Group Opt out"),
    Option(100000005, "Client Opt Out"),
    Option(100000006, "User Opt Out"),
    Option(100000007, "Hard Bounce"),
    Option(100000008, "Soft Bounce"),
)


def _log(**columns: Column) -> Table:
    return Table("concep_emailcampaignlog", "concep_emailcampaignlogs", "Email Campaign Log", True, columns)


def test_labels_suggest_a_route_and_send_account_opt_outs_are_told_apart() -> None:
    assert looks_like("Spam Report") == "opt_out"
    assert looks_like("Group Opt-Out") == "opt_out"
    assert looks_like("User Opt Out") == "user_opt_out"
    assert looks_like("Account opt out") == "user_opt_out"
    assert looks_like("Bounced - soft") == "bounce"
    assert looks_like("Opened") is None


def test_the_table_whose_choice_column_holds_concep_opt_outs_ranks_first_with_reasons() -> None:
    unrelated = (
        "new_survey",
        "new_surveys",
        "Survey",
        [Column("new_status", "Picklist", options=(Option(1, "Opt out"),))],
    )
    log = (
        "concep_emailcampaignlog",
        "concep_emailcampaignlogs",
        "Email Campaign Log",
        [
            Column("concep_channel", "Picklist", options=(Option(1, "Email"),)),
            Column("concep_activitytype", "Picklist", options=CONCEP_TYPES),
        ],
    )
    no_choice = ("new_thing", "new_things", "Thing", [Column("new_kind", "Picklist", options=(Option(1, "A"),))])

    candidates = rank([unrelated, log, no_choice])

    assert [c.table for c in candidates] == ["concep_emailcampaignlog", "new_survey"]
    best = candidates[0]
    assert best.activity_type_column == "concep_activitytype"
    assert "Spam Report, Group Opt out, Client Opt Out" in best.why[0]
    assert any("bounce options (Hard Bounce, Soft Bounce)" in why for why in best.why)


def test_type_lists_name_each_option_by_code_and_label_and_an_empty_list_is_explicit() -> None:
    assert type_list([Option(100000003, "Spam Report")]) == "100000003;Spam Report"
    assert type_list([]) == ";"  # an empty value would mean the default list


def test_recipient_lookups_are_ordered_contact_lead_account_then_polymorphic() -> None:
    table = _log(
        concep_recipientid=Column("concep_recipientid", "Lookup", targets=("contact", "lead", "account")),
        concep_leadid=Column("concep_leadid", "Lookup", targets=("lead",)),
        concep_contactid=Column("concep_contactid", "Lookup", targets=("contact",)),
        ownerid=Column("ownerid", "Owner", targets=("systemuser", "team")),
    )
    assert recipient_columns(table) == ["concep_contactid", "concep_leadid", "concep_recipientid"]


def test_the_proposal_routes_every_option_as_the_router_would() -> None:
    table = _log(
        concep_activitytype=Column("concep_activitytype", "Picklist", options=CONCEP_TYPES),
        concep_recipientid=Column("concep_recipientid", "Lookup", targets=("contact", "lead", "account")),
        concep_bouncereason=Column("concep_bouncereason", "String"),
    )
    proposal = propose(table, "concep_activitytype")

    assert (
        proposal["OPT_OUT_ACTIVITY_TYPES"] == "100000003;Spam Report;100000004;Group Opt out;100000005;Client Opt Out"
    )
    assert proposal["USER_OPT_OUT_ACTIVITY_TYPES"] == "100000006;User Opt Out"
    assert proposal["BOUNCE_DETAIL_COLUMN"] == "concep_bouncereason"
    routes = {r["label"]: r["route"] for r in option_routes(CONCEP_TYPES, Settings.from_env(proposal))}
    assert routes == {
        "Sent": "ignored",
        "Open": "ignored",
        "Spam Report": "opt_out",
        "Group Opt out": "opt_out",
        "Client Opt Out": "opt_out",
        "User Opt Out": "user_opt_out",
        "Hard Bounce": "bounce",
        "Soft Bounce": "bounce",
    }


def test_routing_follows_the_codes_so_a_relabelled_option_still_routes() -> None:
    proposal = propose(_log(t=Column("t", "Picklist", options=(Option(7, "Spam Report"),))), "t")
    [route] = option_routes([Option(7, "Signalement de spam")], Settings.from_env(proposal))
    assert route["route"] == "opt_out"


def test_metadata_labels_kinds_and_options_are_read_as_documented() -> None:
    label = {"LocalizedLabels": [{"Label": "Rapport", "LanguageCode": 1036}, {"Label": "Report", "LanguageCode": 1033}]}
    assert label_text({**label, "UserLocalizedLabel": None}) == "Report"
    assert label_text({**label, "UserLocalizedLabel": {"Label": "Rapport"}}) == "Rapport"
    assert kind_of({"AttributeType": "Virtual", "AttributeTypeName": {"Value": "MultiSelectPicklistType"}}) == (
        "MultiSelectPicklist"
    )
    global_only = {
        "OptionSet": None,
        "GlobalOptionSet": {"Options": [{"Value": 3, "Label": {"UserLocalizedLabel": {"Label": "Spam Report"}}}]},
    }
    assert options_of(global_only) == (Option(3, "Spam Report"),)


def test_a_label_in_the_organisation_s_language_only_is_read_with_its_language() -> None:
    german = {"Label": "Spam-Meldung", "LanguageCode": 1031}
    assert localized_label({"LocalizedLabels": [german], "UserLocalizedLabel": None}) == ("Spam-Meldung", 1031)
    assert localized_label({"LocalizedLabels": [], "UserLocalizedLabel": german}) == ("Spam-Meldung", 1031)
    assert localized_label({"LocalizedLabels": [], "UserLocalizedLabel": None}) == ("", None)
    [option] = options_of({"OptionSet": {"Options": [{"Value": 3, "Label": {"LocalizedLabels": [german]}}]}})
    assert (option.label, option.language) == ("Spam-Meldung", 1031)
