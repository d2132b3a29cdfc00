"""The HTTP routes, one module per resource; `ROUTERS` is what the app includes."""

from __future__ import annotations

from service.routes import health, items, page, rate, recommend

ROUTERS = (recommend.router, rate.router, items.router, health.router, page.router)
