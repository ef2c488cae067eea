"""An emulated Auth0 tenant: a real HTTPS server with Auth0's token, JWKS and Management API
semantics (paging, validation, errors, rate limits), plus a Python API for tests to steer it."""

from .demo import demo_tenant, proxy_config
from .records import MANAGEMENT_API
from .server import TenantServer
from .tenant import Tenant

__all__ = ["MANAGEMENT_API", "Tenant", "TenantServer", "demo_tenant", "proxy_config"]
