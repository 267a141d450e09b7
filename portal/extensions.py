"""Unbound extension objects, bound to the app in create_app."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
csrf = CSRFProtect()
migrate = Migrate()
# Limits are declared per view; nothing is limited by default.
limiter = Limiter(key_func=get_remote_address)
