"""The admin dashboard: login, counts, records, timelines, health and the audit log."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

# Route modules register themselves on bp when imported.
from portal.views.admin import auth, dashboard, record  # noqa: E402,F401
