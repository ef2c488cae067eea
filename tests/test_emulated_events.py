"""The emulated tenant publishes what changes as Auth0's Events do (emulated_tenant/events.py):
the groundwork for issue 21's consumers. Shapes from ../shared/auth0-facts.md ("Events")."""

from __future__ import annotations

import re

import pytest

from emulated_tenant import demo_tenant
from emulated_tenant.events import EventLog, OffsetGone, UnknownOffset

EVENT_ID = re.compile(r"evt_[A-Za-z0-9]{22}")


@pytest.fixture
def tenant():
    tenant = demo_tenant()
    tenant.domain = "tenant.example.com"
    return tenant


def published(tenant, since: str) -> list[tuple[str, dict]]:
    return [
        (e.cloud_event["type"], e.cloud_event["data"]["object"]) for e in tenant.events.after(since)
    ]


def test_membership_changes_are_published_once_each(tenant):
    start = tenant.events.latest_offset()
    tenant.add_member("org_globex", "auth0|alice-acme")
    tenant.add_member("org_globex", "auth0|alice-acme")  # a member already: no event
    tenant.remove_members("org_globex", ["auth0|alice-acme", "auth0|nobody"])
    org = {"id": "org_globex", "name": tenant.organization("org_globex").name}
    membership = {"organization": org, "user": {"user_id": "auth0|alice-acme"}}
    assert published(tenant, start) == [
        ("organization.member.added", membership),
        ("organization.member.deleted", membership),
    ]


def test_each_event_is_a_cloud_event_of_the_tenant_with_an_offset_to_resume_from(tenant):
    start = tenant.events.latest_offset()
    tenant.update_user("auth0|alice-acme", {"user_metadata": {"tier": "gold"}})
    tenant.delete_user("auth0|bob-acme")
    [updated, deleted] = tenant.events.after(start)
    for event in (updated, deleted):
        cloud = event.cloud_event
        assert cloud["specversion"] == "1.0" and EVENT_ID.fullmatch(cloud["id"])
        assert cloud["source"] == "urn:auth0:tenant.example.com"
        assert cloud["time"].endswith("Z") and cloud["a0stream"].startswith("est_")
    assert updated.cloud_event["type"] == "user.updated"
    assert updated.cloud_event["data"]["object"]["user_metadata"] == {"tier": "gold"}
    assert deleted.cloud_event["data"]["object"]["user_id"] == "auth0|bob-acme"
    assert updated.offset < deleted.offset == tenant.events.latest_offset()
    assert tenant.events.after(updated.offset) == [deleted]  # resumed after an offset
    assert tenant.events.after(None) == []  # no offset: from the newest on


def test_role_changes_name_the_role(tenant):
    role = next(iter(tenant._roles.values()))
    tenant.remove_member_roles("org_acme", "auth0|alice-acme", [role.id])  # held or not
    start = tenant.events.latest_offset()
    tenant.assign_member_roles("org_acme", "auth0|alice-acme", [role.id, role.id])
    tenant.remove_member_roles("org_acme", "auth0|alice-acme", [role.id])
    types = [e.cloud_event["type"] for e in tenant.events.after(start)]
    assert types == ["organization.member.role.assigned", "organization.member.role.deleted"]
    assert tenant.events.after(start)[0].cloud_event["data"]["object"]["role"]["id"] == role.id


def test_an_offset_no_longer_kept_is_gone_and_a_made_up_one_unknown():
    log = EventLog(lambda: "tenant.example.com", retained=3)
    events = [log.record("user.updated", {"user_id": f"u{n}"}) for n in range(5)]  # keeps 3
    with pytest.raises(OffsetGone):
        log.after(events[0].offset)  # the event after it is no longer kept
    assert log.after(events[1].offset) == events[2:]  # every event after it is
    with pytest.raises(UnknownOffset):
        log.after("not-an-offset")
    with pytest.raises(UnknownOffset):
        log.after("ffffffffffffffff")  # ahead of the newest
