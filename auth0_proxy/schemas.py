"""What the proxy returns, described once."""

from __future__ import annotations

from marshmallow import Schema, fields

# Identity-provider tokens Auth0 adds to identities when the management client holds
# read:user_idp_tokens; an edge client must never receive them.
IDP_SECRETS = ("access_token", "access_token_secret", "refresh_token")


class MemberSchema(Schema):
    """An organization member as the Management API lists it."""

    user_id = fields.String()
    email = fields.String()
    name = fields.String()
    picture = fields.String()


def public_profile(user: dict) -> dict:
    """The Auth0 profile as Auth0 returns it, without identity-provider tokens."""
    identities = [
        {key: value for key, value in identity.items() if key not in IDP_SECRETS}
        for identity in user.get("identities", [])
        if isinstance(identity, dict)
    ]
    return {**user, "identities": identities} if "identities" in user else dict(user)
