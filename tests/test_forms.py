"""Form validation as a person sees it: what is refused, what message sits next to the field,
what the form keeps, and exactly what reaches Authenticate when the form is accepted."""

import re
import socket
import unicodedata
from datetime import date, timedelta
from html.parser import HTMLParser

import pytest
from werkzeug.datastructures import MultiDict

from portal.forms import OnboardingForm, age_on
from tests.conftest import VALID_FORM, submit_key_from

CONTROL_MESSAGE = "Remove the invisible or control characters."
NO_LETTER_MESSAGE = "Enter a name with at least one letter."
TOO_LONG_MESSAGE = "Field cannot be longer than 100 characters."
UNDER_AGE_MESSAGE = "You must be at least 18 years old."
PAST_MESSAGE = "Enter a date in the past."
TOO_OLD_MESSAGE = "Check the year of your date of birth."
NOT_A_DATE_MESSAGE = "Enter a date that exists, as year-month-day: for example 1990-05-17."
EMAIL_MESSAGE = "Enter a valid email address"
PHONE_PARSE_MESSAGE = "Enter a phone number, like +1 201-555-0123."
PHONE_INVALID_MESSAGE = (
    "That phone number doesn't look right. Check the digits and the country code, "
    "like +1 201-555-0123."
)
PHONE_NOT_US_MESSAGE = (
    "That doesn't look like a phone number in the country you chose (United States). Check "
    "the digits, or start with + and the country code, like +1 201-555-0123."
)
CONSENT_MESSAGE = "You need to agree before we can go on."
SUMMARY_MESSAGE = "Please correct these:"
# A Persian name (Mehrangiz) that needs a zero-width non-joiner between its two parts.
PERSIAN_ZWNJ_NAME = "\u0645\u0647\u0631\u200c\u0627\u0646\u06af\u06cc\u0632"
# Every field filled in, so a re-rendered form can be checked for each typed value.
FULL_FORM = dict(
    VALID_FORM,
    first_name="Siobhán",
    middle_name="O'Neil",
    last_name="Saldaña-Pérez",
    phone="+442079460958",
    country="GBR",
)
TEXT_FIELDS = ("first_name", "middle_name", "last_name", "birth_date", "email", "phone")


def years_ago(years, today=None):
    """Return the date `years` years before today; 29 February falls back to the 28th."""
    today = today or date.today()
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


class FormPage(HTMLParser):
    """What a browser shows for a rendered form: values, ticks, choices and error texts."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.values = {}
        self.checked = set()
        self.selected = {}
        self.errors = {}
        self.invalid = set()
        self.alerts = []
        self._select = None
        self._error_for = None
        self._in_alert = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if attrs.get("aria-invalid") == "true":
            self.invalid.add(name)
        if tag == "input" and attrs.get("type") == "checkbox":
            if "checked" in attrs:
                self.checked.add(name)
        elif tag == "input":
            self.values[name] = attrs.get("value", "")
        elif tag == "select":
            self._select = name
        elif tag == "option" and "selected" in attrs:
            self.selected[self._select] = attrs.get("value")
        elif tag == "p" and attrs.get("class") == "error":
            self._error_for = attrs["id"].removesuffix("-error")
            self.errors[self._error_for] = ""
        elif tag == "div" and attrs.get("role") == "alert":
            self._in_alert = True

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "p":
            self._error_for = None
        elif tag == "div":
            self._in_alert = False

    def handle_data(self, data):
        if self._error_for is not None:
            self.errors[self._error_for] += data
        elif self._in_alert and data.strip():
            self.alerts.append(data.strip())


def post_form(client, drop=(), **fields):
    """Post the valid form from a fresh GET, changed by `fields`, without the `drop` fields."""
    data = dict(VALID_FORM, submit_key=submit_key_from(client.get("/").text))
    data.update(fields)
    for name in drop:
        del data[name]
    return client.post("/", data=data)


def assert_refused(response, field, message, fake):
    """The submit was refused with `message` next to `field`, and nothing reached Authenticate."""
    page = FormPage(response.text)
    assert response.status_code == 422
    assert "Location" not in response.headers
    assert message in page.errors[field]
    assert SUMMARY_MESSAGE in page.alerts
    # The summary links to the field, with the same message.
    assert f'href="#{field}">' in response.text
    assert any(message in alert for alert in page.alerts if alert != SUMMARY_MESSAGE)
    assert fake.users == []
    return page


# Names


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("O'Brien", "O'Brien"),
        ("Saldaña-Pérez", "Saldaña-Pérez"),
        ("小龍", "小龍"),
        ("Jose\u0301", "Jos\u00e9"),
        ("  Dana   Maria  ", "Dana Maria"),
        ("Mary-Jane St. Claire", "Mary-Jane St. Claire"),
        (PERSIAN_ZWNJ_NAME, PERSIAN_ZWNJ_NAME),
        ("A" + "a" * 99, "A" + "a" * 99),
    ],
)
def test_first_name_is_sent_normalised_when_valid(client, fake_client, typed, sent):
    response = post_form(client, first_name=typed)

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/continue")
    assert len(fake_client.users) == 1
    assert fake_client.users[0].first_name == sent
    assert unicodedata.is_normalized("NFC", fake_client.users[0].first_name)


def test_name_decomposed_accent_is_sent_as_one_code_point_when_typed_decomposed(
    client, fake_client
):
    post_form(client, first_name="Jose\u0301")

    first_name = fake_client.users[0].first_name
    assert first_name == "Jos\u00e9"
    assert len(first_name) == 4


def test_middle_and_last_name_are_normalised_like_first_name_when_valid(client, fake_client):
    response = post_form(client, middle_name="  Rene\u0301e  ", last_name="van  der   Berg ")

    assert response.status_code == 303
    assert fake_client.users[0].middle_name == "Ren\u00e9e"
    assert fake_client.users[0].last_name == "van der Berg"


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("\x00", CONTROL_MESSAGE),
        ("Dana\x00", CONTROL_MESSAGE),
        ("Dana\x07", CONTROL_MESSAGE),
        ("Dana\r\nBcc: x@evil", "Remove the invisible or control characters."),
        ("Dana\u202eanaD", CONTROL_MESSAGE),
        ("\u2066Dana\u2069", CONTROL_MESSAGE),
        ("Da\u200bna", CONTROL_MESSAGE),
        ("'''", NO_LETTER_MESSAGE),
        ("---", NO_LETTER_MESSAGE),
        ("12345", "Names can't contain “1”."),
        ("Dana2", "Names can't contain “2”."),
        ("<script>", "Names can't contain “<”."),
        ("A" + "a" * 100, TOO_LONG_MESSAGE),
        ("", "Enter your first name."),
        ("   ", "Enter your first name."),
    ],
)
def test_first_name_is_refused_with_message_next_to_it_when_invalid(
    client, fake_client, typed, message
):
    response = post_form(client, first_name=typed)

    page = assert_refused(response, "first_name", message, fake_client)
    assert page.invalid == {"first_name"}


@pytest.mark.parametrize("typed", ["Dana\r\nSmith", "Dana\x1fSmith", "Dana\x0bSmith"])
def test_first_name_is_refused_when_it_holds_a_line_break_or_separator_control(
    client, fake_client, typed
):
    response = post_form(client, first_name=typed)

    assert_refused(response, "first_name", CONTROL_MESSAGE, fake_client)


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("middle_name", "<b>", "Names can't contain “<”."),
        ("middle_name", "\u202e", CONTROL_MESSAGE),
        ("middle_name", "A" * 101, TOO_LONG_MESSAGE),
        ("last_name", "---", NO_LETTER_MESSAGE),
        ("last_name", "Okafor\x00", CONTROL_MESSAGE),
        ("last_name", "", "Enter your last name."),
    ],
)
def test_other_names_are_refused_with_message_next_to_them_when_invalid(
    client, fake_client, field, typed, message
):
    response = post_form(client, **{field: typed})

    page = assert_refused(response, field, message, fake_client)
    assert page.invalid == {field}


def test_middle_name_is_sent_as_none_when_only_spaces(client, fake_client):
    response = post_form(client, middle_name="   ")

    assert response.status_code == 303
    assert fake_client.users[0].middle_name is None


# Birth date


def test_birth_date_is_sent_as_a_date_when_valid(client, fake_client):
    response = post_form(client, birth_date="1988-11-07")

    assert response.status_code == 303
    assert fake_client.users[0].birth_date == date(1988, 11, 7)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        (date.today() + timedelta(days=1), PAST_MESSAGE),
        (date(2999, 1, 1), PAST_MESSAGE),
        (date.today(), PAST_MESSAGE),
        (date.today() - timedelta(days=1), UNDER_AGE_MESSAGE),
        (years_ago(18) + timedelta(days=1), UNDER_AGE_MESSAGE),
        (years_ago(131), TOO_OLD_MESSAGE),
        (date(1, 1, 1), TOO_OLD_MESSAGE),
    ],
)
def test_birth_date_is_refused_with_message_next_to_it_when_out_of_range(
    client, fake_client, typed, message
):
    response = post_form(client, birth_date=typed.isoformat())

    page = assert_refused(response, "birth_date", message, fake_client)
    assert page.values["birth_date"] == typed.isoformat()


@pytest.mark.parametrize("years", [18, 30, 130])
def test_birth_date_is_accepted_when_age_is_within_limits(client, fake_client, years):
    born = years_ago(years)

    response = post_form(client, birth_date=born.isoformat())

    assert response.status_code == 303
    assert fake_client.users[0].birth_date == born


@pytest.mark.parametrize(("years", "status"), [(20, 422), (21, 303)])
def test_birth_date_minimum_age_follows_config_when_min_age_is_21(configured, years, status):
    _, client, fake = configured(MIN_AGE=21)

    response = post_form(client, birth_date=years_ago(years).isoformat())

    assert response.status_code == status
    if status == 422:
        assert "You must be at least 21 years old." in FormPage(response.text).errors["birth_date"]
    assert len(fake.users) == (status == 303)


def test_birth_date_is_refused_with_message_when_missing(client, fake_client):
    response = post_form(client, drop=("birth_date",))

    assert_refused(response, "birth_date", "Enter your date of birth.", fake_client)


def test_birth_date_is_refused_with_message_when_empty(client, fake_client):
    response = post_form(client, birth_date="")

    assert_refused(response, "birth_date", "Enter your date of birth.", fake_client)


@pytest.mark.parametrize("typed", ["not a date", "2021-02-30", "07/11/1988"])
def test_birth_date_is_refused_with_message_when_not_a_date(client, fake_client, typed):
    response = post_form(client, birth_date=typed)

    page = assert_refused(response, "birth_date", NOT_A_DATE_MESSAGE, fake_client)
    assert page.values["birth_date"] == typed
    # As text: a date input would show a browser nothing for a value it cannot read.
    assert re.search(r'<input [^>]*id="birth_date"[^>]* type="text"', response.text)


def test_birth_date_stays_a_date_input_when_it_is_a_date_but_refused(client, fake_client):
    response = post_form(client, birth_date=date.today().isoformat())

    assert re.search(r'<input [^>]*id="birth_date"[^>]* type="date"', response.text)


@pytest.mark.parametrize(
    ("born", "today", "age"),
    [
        (date(2000, 5, 22), date(2018, 5, 21), 17),
        (date(2000, 5, 22), date(2018, 5, 22), 18),
        (date(2008, 2, 29), date(2026, 2, 28), 17),
        (date(2008, 2, 29), date(2026, 3, 1), 18),
        (date(2008, 2, 29), date(2028, 2, 29), 20),
        (date(2007, 3, 1), date(2025, 2, 28), 17),
    ],
)
def test_age_on_counts_whole_years_when_birthday_is_near(born, today, age):
    assert age_on(born, today) == age


def test_form_birth_date_error_names_minimum_age_when_validated_directly(app):
    formdata = MultiDict(dict(FULL_FORM, birth_date=(date.today() - timedelta(days=1)).isoformat()))

    with app.test_request_context("/", method="POST"):
        form = OnboardingForm(formdata=formdata)
        assert form.validate() is False
        assert form.errors == {"birth_date": [UNDER_AGE_MESSAGE]}


# Email


@pytest.mark.parametrize(
    "typed",
    [
        "dana",
        "dana@",
        "@example.org",
        "dana@example",
        "dana okafor@example.org",
        "dana@@example.org",
        "dana@example.org\r\nBcc: x@evil.example",
        "dana@example.org\n",
        "dana\r@example.org",
    ],
)
def test_email_is_refused_with_message_next_to_it_when_invalid(client, fake_client, typed):
    response = post_form(client, email=typed)

    assert_refused(response, "email", EMAIL_MESSAGE, fake_client)


def test_email_is_refused_with_message_when_empty(client, fake_client):
    response = post_form(client, email="")

    assert_refused(response, "email", "Enter your email address.", fake_client)


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("Dana.Okafor@EXAMPLE.ORG", "Dana.Okafor@example.org"),
        ("dana@Example.Org", "dana@example.org"),
        ("dana@BÜCHER.example", "dana@bücher.example"),
    ],
)
def test_email_domain_is_normalised_before_it_is_sent(client, fake_client, typed, sent):
    response = post_form(client, email=typed)

    assert response.status_code == 303
    assert fake_client.users[0].email == sent


def test_email_is_checked_without_dns_when_valid(client, fake_client, monkeypatch):
    lookups = []

    def no_network(*args, **kwargs):
        lookups.append(args)
        raise OSError("network use in a test")

    key = submit_key_from(client.get("/").text)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "sendto", no_network)

    response = client.post(
        "/", data=dict(VALID_FORM, submit_key=key, email="dana@unregistered-domain.example.org")
    )

    assert response.status_code == 303
    assert lookups == []
    assert fake_client.users[0].email == "dana@unregistered-domain.example.org"


# Phone


def test_phone_is_sent_as_none_when_blank(client, fake_client):
    response = post_form(client, phone="")

    assert response.status_code == 303
    assert fake_client.users[0].phone is None


@pytest.mark.parametrize(
    ("typed", "sent"),
    [
        ("+44 20 7946 0958", "+442079460958"),
        ("(650) 253-0000", "+16502530000"),
        ("650.253.0000", "+16502530000"),
        ("+1 650 253 0000", "+16502530000"),
    ],
)
def test_phone_is_sent_in_e164_with_us_default_region(client, fake_client, typed, sent):
    response = post_form(client, phone=typed)

    assert response.status_code == 303
    assert fake_client.users[0].phone == sent


def test_phone_national_number_is_read_as_one_of_the_chosen_country(client, fake_client):
    response = post_form(client, phone="020 7946 0958", country="GBR")

    assert response.status_code == 303
    assert fake_client.users[0].phone == "+442079460958"


def test_phone_gb_national_number_is_refused_when_the_country_is_the_usa(client, fake_client):
    response = post_form(client, phone="020 7946 0958", country="USA")

    assert_refused(response, "phone", PHONE_NOT_US_MESSAGE, fake_client)


def test_phone_is_not_judged_before_a_country_is_chosen(client, fake_client):
    response = post_form(client, phone="020 7946 0958", country="")

    page = assert_refused(response, "country", "Choose your country.", fake_client)
    assert "phone" not in page.errors
    assert page.values["phone"] == "020 7946 0958"


def test_phone_example_in_the_message_is_one_of_the_chosen_country(client, fake_client):
    response = post_form(client, phone="12", country="GBR")

    assert_refused(response, "phone", "country code, like +44 121 234 5678.", fake_client)


def test_phone_region_falls_back_to_the_configured_one_without_a_numbering_plan(configured):
    _, client, fake = configured(PHONE_DEFAULT_REGION="GB")

    response = post_form(client, phone="020 7946 0958", country="ATA")  # Antarctica

    assert response.status_code == 303
    assert fake.users[0].phone == "+442079460958"


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("hello", PHONE_PARSE_MESSAGE),
        ("+999 123", PHONE_PARSE_MESSAGE),
        ("12", PHONE_NOT_US_MESSAGE),
        ("+44 20", PHONE_INVALID_MESSAGE),
        ("0000000000", PHONE_NOT_US_MESSAGE),
        ("+1 650 253 0000 0000 0000 0000 0000", "Field cannot be longer than 32 characters."),
    ],
)
def test_phone_is_refused_with_message_next_to_it_when_garbage(client, fake_client, typed, message):
    response = post_form(client, phone=typed)

    page = assert_refused(response, "phone", message, fake_client)
    assert page.values["phone"] == typed


# Country


def test_country_defaults_to_default_country_when_form_is_new(client):
    page = FormPage(client.get("/").text)

    assert page.selected == {"country": "USA"}


def test_country_default_follows_config_when_default_country_is_gbr(configured):
    _, client, _ = configured(DEFAULT_COUNTRY="GBR")

    page = FormPage(client.get("/").text)

    assert page.selected == {"country": "GBR"}


def test_country_choices_are_alpha3_codes_when_form_is_shown(client):
    html = client.get("/").text
    codes = []

    class Options(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "option":
                codes.append(dict(attrs)["value"])

    Options().feed(html)

    assert codes[0] == ""
    assert len(codes) > 240
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in codes[1:])
    assert {"USA", "GBR", "DEU", "JPN", "IRN"} <= set(codes)


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("XXX", "Not a valid choice."),
        ("US", "Not a valid choice."),
        ("usa", "Not a valid choice."),
        ("", "Choose your country."),
    ],
)
def test_country_is_refused_with_message_next_to_it_when_not_an_alpha3_code(
    client, fake_client, typed, message
):
    response = post_form(client, country=typed)

    assert_refused(response, "country", message, fake_client)


def test_country_selection_belongs_to_each_form_when_forms_follow_each_other(client):
    chosen = FormPage(post_form(client, country="DEU", email="not an address").text)
    unknown = FormPage(post_form(client, country="XXX").text)
    prompt = FormPage(post_form(client, country="").text)
    fresh = FormPage(client.get("/").text)

    assert (chosen.selected, unknown.selected) == ({"country": "DEU"}, {})
    assert (prompt.selected, fresh.selected) == ({"country": ""}, {"country": "USA"})


def test_country_is_sent_as_chosen_when_valid(client, fake_client):
    response = post_form(client, country="GBR")

    assert response.status_code == 303
    assert fake_client.users[0].country == "GBR"


# Consent


def test_consent_is_refused_with_its_message_when_unchecked(client, fake_client):
    response = post_form(client, drop=("consent",))

    page = assert_refused(response, "consent", CONSENT_MESSAGE, fake_client)
    assert "consent" not in page.checked
    assert 'id="consent-statement"' in response.text


# Every invalid submit keeps what was typed


@pytest.mark.parametrize(
    ("field", "typed", "message"),
    [
        ("first_name", "Dana<3", "Names can't contain “<”."),
        ("middle_name", "\x07", CONTROL_MESSAGE),
        ("last_name", "'''", NO_LETTER_MESSAGE),
        ("birth_date", date.today().isoformat(), PAST_MESSAGE),
        ("email", 'dana"@example', EMAIL_MESSAGE),
        # FULL_FORM's country is the UK, so the example is a UK number.
        ("phone", "call me", "Enter a phone number, like +44 121 234 5678."),
        ("country", "", "Choose your country."),
        ("consent", None, CONSENT_MESSAGE),
    ],
)
def test_invalid_submit_keeps_every_typed_value_when_one_field_is_wrong(
    client, fake_client, field, typed, message
):
    fields = dict(FULL_FORM, **{field: typed})
    drop = [name for name, value in fields.items() if value is None]
    for name in drop:
        del fields[name]
    key = submit_key_from(client.get("/").text)

    response = client.post("/", data=dict(fields, submit_key=key))

    page = assert_refused(response, field, message, fake_client)
    assert set(page.errors) == {field}
    for name in TEXT_FIELDS:
        assert page.values[name] == fields[name], name
    assert page.selected["country"] == fields["country"]
    assert ("consent" in page.checked) == ("consent" in fields)
    assert page.values["submit_key"] == key


def test_invalid_submit_escapes_typed_values_when_they_hold_html(client, fake_client):
    typed = '"><script>alert(1)</script>'

    response = post_form(client, first_name=typed, email=typed)

    assert response.status_code == 422
    assert "<script>alert(1)</script>" not in response.text
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in response.text
    page = FormPage(response.text)
    assert page.values["first_name"] == typed
    assert page.values["email"] == typed
    assert fake_client.users == []
