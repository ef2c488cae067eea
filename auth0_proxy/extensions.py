"""Extensions created unbound here and bound to the app in the factory."""

from flask_caching import Cache

from .auth import Auth0ResourceProtector

cache = Cache()
require_oauth = Auth0ResourceProtector()
