"""Flask-WTF forms. Every POST goes through one, so CSRF is always checked."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import cache, lru_cache
from typing import Any

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    HiddenField,
    PasswordField,
    RadioField,
    SelectField,
    StringField,
)
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError
from wtforms.widgets import Select, html_params

NAME_MAX = 100
EMAIL_MAX = 254
PHONE_MAX = 32
# Longest admin path worth returning to after sign-in; a longer `next` is dropped, not refused.
NEXT_MAX = 2048
OLDEST_AGE = 130
# Apostrophes and hyphens real names use, in their ASCII and typographic forms.
NAME_PUNCTUATION = frozenset(" '’ʼ-‐.")
# Zero-width (non-)joiners are format characters that some scripts need inside names.
ALLOWED_FORMAT_CHARS = frozenset("\u200c\u200d")


def normalise_name(value: str | None) -> str:
    """Return the name in NFC, with space characters as one plain space, trimmed.

    Only Unicode space separators are folded: str.split() would also swallow line breaks
    and other control characters, which must reach name_problem to be refused.
    """
    text = unicodedata.normalize("NFC", value or "")
    spaced = "".join(" " if unicodedata.category(char) == "Zs" else char for char in text)
    return re.sub(" {2,}", " ", spaced).strip(" ")


def name_problem(value: str) -> str | None:
    """Say what is wrong with a name, or None if it is acceptable."""
    for char in value:
        category = unicodedata.category(char)
        if char in NAME_PUNCTUATION or char in ALLOWED_FORMAT_CHARS:
            continue
        if category[0] in "LM":
            continue
        if category[0] == "C":
            return "Remove the invisible or control characters."
        return f"Names can't contain “{char}”."
    if not any(unicodedata.category(char)[0] == "L" for char in value):
        return "Enter a name with at least one letter."
    return None


class IsoDateField(DateField):
    """A date as year-month-day (what a date input sends), refused in plain words otherwise.

    Browsers with a date picker cannot send anything else; this is for those that show a
    plain text box, for impossible dates such as 30 February, and for edited URLs (the
    admin filters are a GET form).
    """

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError as exc:
            raise ValueError(
                "Enter a date that exists, as year-month-day: for example 1990-05-17."
            ) from exc

    def __call__(self, **kwargs: Any) -> Markup:
        if self.data is None and self.raw_data and self.raw_data[0]:
            # A date input shows nothing for text it cannot read: show what was typed instead.
            kwargs.setdefault("type", "text")
        return super().__call__(**kwargs)


class NameField(StringField):
    """A text field for a personal name: NFC, trimmed, letters and name punctuation only."""

    def process_formdata(self, valuelist: list[str]) -> None:
        super().process_formdata(valuelist)
        self.data = normalise_name(self.data)

    def pre_validate(self, form: FlaskForm) -> None:
        if self.data:
            problem = name_problem(self.data)
            if problem:
                raise ValidationError(problem)


def sort_key(name: str) -> str:
    """Return a name without accents, lower-cased, so Côte d'Ivoire sorts among the Cs."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


@cache
def country_choices() -> list[tuple[str, str]]:
    """Return ISO 3166-1 alpha-3 codes with their names, in alphabetical order."""
    countries = [(c.alpha_3, getattr(c, "common_name", c.name)) for c in pycountry.countries]
    return sorted(countries, key=lambda pair: sort_key(pair[1]))


@cache
def phone_regions() -> dict[str, str]:
    """Return each country's phone region (ISO 3166-1 alpha-2) by its alpha-3 code.

    Countries without a numbering plan of their own (Antarctica, Pitcairn, ...) are left out.
    """
    return {
        c.alpha_3: c.alpha_2
        for c in pycountry.countries
        if phonenumbers.country_code_for_region(c.alpha_2)
    }


@cache
def country_select_choices() -> dict[str, str]:
    """Return the country select's options: a prompt (value ""), then every country."""
    return {"": "Choose a country", **dict(country_choices())}


@lru_cache(maxsize=8)
def country_options(selected: str | None) -> Markup:
    """Return the country <option> elements with `selected` marked (None: none is)."""
    return Markup("").join(
        Markup(f"<option {html_params(value=value, selected=value == selected)}>")
        + escape(label)
        + Markup("</option>")
        for value, label in country_select_choices().items()
    )


class CountrySelect(Select):
    """The country select, its options rendered once per selected value and then reused.

    The ~250 options are the same on every form, and rendering them one by one took more
    than two thirds of a form page's CPU time (about 8 of 11 ms).
    """

    def __call__(self, field: SelectField, **kwargs: Any) -> Markup:
        kwargs.setdefault("id", field.id)
        for flag in self.validation_attrs:
            if flag not in kwargs and getattr(field.flags, flag, False):
                kwargs[flag] = True
        data = field.data
        selected = data if isinstance(data, str) and data in country_select_choices() else None
        params = html_params(name=field.name, **kwargs)
        return Markup(f"<select {params}>") + country_options(selected) + Markup("</select>")


class CountryField(SelectField):
    """A select of every country, rendered from a cache and checked by one dict lookup."""

    widget = CountrySelect()

    def pre_validate(self, form: FlaskForm) -> None:
        # SelectField's own check builds and walks all ~250 options on every submit.
        if self.data not in self.choices:
            raise ValidationError(self.gettext("Not a valid choice."))


def age_on(birth_date: date, today: date) -> int:
    """Return the age in whole years on `today`."""
    had_birthday = (today.month, today.day) >= (birth_date.month, birth_date.day)
    return today.year - birth_date.year - (0 if had_birthday else 1)


def checked_email(value: str) -> str:
    """Return the normalised address, or raise ValidationError; no DNS lookups."""
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationError(f"Enter a valid email address: {exc}") from exc
    return result.normalized


class OnboardingForm(FlaskForm):
    """The details Authenticate needs to create a user. None of them are stored."""

    submit_key = HiddenField()
    first_name = NameField(
        "First name", [DataRequired("Enter your first name."), Length(max=NAME_MAX)]
    )
    middle_name = NameField("Middle name (optional)", [Optional(), Length(max=NAME_MAX)])
    last_name = NameField(
        "Last name", [DataRequired("Enter your last name."), Length(max=NAME_MAX)]
    )
    birth_date = IsoDateField(
        "Date of birth", [InputRequired("Enter your date of birth.")], format="%Y-%m-%d"
    )
    email = EmailField(
        "Email address", [DataRequired("Enter your email address."), Length(max=EMAIL_MAX)]
    )
    phone = StringField("Phone number (optional)", [Optional(), Length(max=PHONE_MAX)])
    country = CountryField("Country", [DataRequired("Choose your country.")], choices=[])
    consent = BooleanField("I agree", [DataRequired("You need to agree before we can go on.")])
    delivery = RadioField(
        "How would you like to continue?",
        choices={
            "now": "On this device, now",
            "email": "Email me a link, so I can continue later or on my phone",
        },
        default="now",
        validators=[InputRequired("Choose how you'd like to continue.")],
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.country.choices = country_select_choices()
        self.normalized_email: str | None = None
        self.e164_phone: str | None = None
        self.phone.description = (
            "Start with + and the country code if it isn't a number in the country below."
        )

    def validate_birth_date(self, field: DateField) -> None:
        if field.data is None:  # not a date: DateField has already said so
            return
        today = date.today()
        if field.data >= today:
            raise ValidationError("Enter a date in the past.")
        age = age_on(field.data, today)
        minimum = int(current_app.config["MIN_AGE"])
        if age < minimum:
            raise ValidationError(f"You must be at least {minimum} years old.")
        if age > OLDEST_AGE:
            raise ValidationError("Check the year of your date of birth.")

    def validate_email(self, field: EmailField) -> None:
        field.data = checked_email(field.data)

    def validate_phone(self, field: StringField) -> None:
        # A number typed without +country code is read as one of the chosen country's.
        country = self.country.data or ""
        national = not field.data.lstrip().startswith("+")
        if national and (not country or country not in country_select_choices()):
            return  # no country yet to read it by: the country's own message says so
        region = phone_regions().get(country)
        if region is None:  # a country without a numbering plan of its own
            region, national = current_app.config["PHONE_DEFAULT_REGION"], False
        example = phonenumbers.format_number(
            phonenumbers.example_number(region) or phonenumbers.example_number("US"),
            phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        )
        try:
            number = phonenumbers.parse(field.data, region)
        except phonenumbers.NumberParseException as exc:
            raise ValidationError(f"Enter a phone number, like {example}.") from exc
        if not phonenumbers.is_valid_number(number):
            if national:
                raise ValidationError(
                    f"That doesn't look like a phone number in the country you chose "
                    f"({country_select_choices()[country]}). Check the digits, or start with + "
                    f"and the country code, like {example}."
                )
            raise ValidationError(
                f"That phone number doesn't look right. Check the digits and the country "
                f"code, like {example}."
            )
        # Sent as E.164; the field keeps what was typed, in case the form is shown again.
        self.e164_phone = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class ResendForm(FlaskForm):
    """Ask for a fresh resume link by email. The address is used once and not kept."""

    email = EmailField(
        "Email address", [DataRequired("Enter your email address."), Length(max=EMAIL_MAX)]
    )

    def validate_email(self, field: EmailField) -> None:
        field.data = checked_email(field.data)


class EmptyForm(FlaskForm):
    """A POST-only button: nothing but the CSRF token."""


class LoginForm(FlaskForm):
    """Admin sign-in."""

    username = StringField("Username", [DataRequired("Enter your username."), Length(max=64)])
    password = PasswordField("Password", [DataRequired("Enter your password."), Length(max=256)])
    # Hidden, so a Length error would be invisible: an over-long value just isn't used.
    next = HiddenField(filters=[lambda value: value if value and len(value) <= NEXT_MAX else ""])
