"""Campaign files: every key, relative paths, flags that override, and exact messages for mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialer.campaign import Campaign
from dialer.cli import main
from dialer.errors import UsageError
from dialer.parameters import ParameterMap, snake_case
from dialer.windows import CallingWindow

FULL = '''
name = "spring-renewals"
contacts = "data/contacts.csv"
out = "../reports/spring.csv"
sheet = "Leads"
phone_column = "Mobile"
region = "GB"
provider = "formant"
base_url = "http://127.0.0.1:9"
agent_id = 42
rate = 2.5
concurrency = 4
max_attempts = 3
dnc = ["dnc.csv"]
exclude_report = "../reports/last.csv"

[parameters]
include_other_columns = false
columns = { "Customer Name" = "customer_name" }
constants = { campaign = "spring-renewals" }
conversation_id_column = "Thread"
retry_context = { retry_initial_message = "Hi {Customer Name}" }
metadata = { source = "dialer" }

[window]
hours = "09:00-20:00"
days = ["mon", "tue"]
timezone_column = "TZ"
fallback_timezone = "Europe/London"
on_outside_window = "schedule"

[sandbox]
fail = 0.1
'''


def write(tmp_path: Path, text: str, name: str = "campaign.toml") -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_every_key_is_read_and_paths_are_relative_to_the_file(tmp_path):
    campaign = Campaign.from_toml(write(tmp_path, FULL))
    folder = tmp_path / "campaigns"
    assert campaign == Campaign(
        contacts=folder / "data/contacts.csv", out=tmp_path / "reports/spring.csv", name="spring-renewals",
        region="GB", phone_column="Mobile", sheet="Leads", provider="formant", base_url="http://127.0.0.1:9",
        agent_id=42, rate=2.5, concurrency=4, max_attempts=3, sandbox={"fail": 0.1},
        parameters=ParameterMap(columns={"Customer Name": "customer_name"}, constants={"campaign": "spring-renewals"},
                                include_other_columns=False, conversation_id_column="Thread",
                                retry_context={"retry_initial_message": "Hi {Customer Name}"},
                                metadata={"source": "dialer"}),
        window=CallingWindow.parse("09:00-20:00", ["mon", "tue"], timezone_column="TZ",
                                   fallback_timezone="Europe/London"),
        on_outside_window="schedule", dnc=(folder / "dnc.csv",), exclude_report=tmp_path / "reports/last.csv")


def test_flags_override_the_file_and_dnc_flags_add_to_its_lists(tmp_path):
    campaign = Campaign.from_toml(write(tmp_path, FULL), rate=9, region="us", dnc=[Path("extra.csv")], agent_id=None)
    assert (campaign.rate, campaign.region, campaign.agent_id) == (9, "US", 42)
    assert campaign.dnc == (tmp_path / "campaigns" / "dnc.csv", Path("extra.csv"))


def test_the_campaign_id_is_the_name_or_else_the_report_path(tmp_path):
    assert Campaign.from_toml(write(tmp_path, FULL)).campaign_id == "spring-renewals"
    assert Campaign(contacts=Path("c.csv"), out=tmp_path / "r.csv").campaign_id == str(tmp_path / "r.csv")


@pytest.mark.parametrize("text, message", [
    ('contacts = "c.csv"\nrat = 5\n', "unknown key 'rat'; did you mean 'rate'?"),
    ('contacts = "c.csv"\nzzz = 5\n', "unknown key 'zzz'; valid keys: name, contacts, out, region, phone_column, "
                                      "sheet, provider, base_url, agent_id, rate, concurrency, max_attempts, dnc, "
                                      "exclude_report, sandbox, parameters, window"),
    ('contacts = "c.csv"\n[parameters]\ncolums = {}\n', "unknown key 'parameters.colums'; did you mean 'parameters.columns'?"),
    ('contacts = "c.csv"\n[window]\nhours = "09:00-20:00"\nday = []\n', "unknown key 'window.day'; did you mean 'window.days'?"),
    ('contacts = "c.csv"\nrate = "fast"\n', "rate = 'fast' should be a number"),
    ('contacts = "c.csv"\nagent_id = 1.5\n', "agent_id = 1.5 should be an integer"),
    ('contacts = "c.csv"\nagent_id = true\n', "agent_id = True should be an integer"),
    ('contacts = "c.csv"\ndnc = "dnc.csv"\n', "dnc = 'dnc.csv' should be a list"),
    ('contacts = "c.csv"\n[parameters]\ninclude_other_columns = "no"\n', "parameters.include_other_columns = 'no' should be true or false"),
    ('contacts = "c.csv"\n[window]\ndays = ["mon"]\n', '[window] needs hours = "09:00-20:00"'),
    ('contacts = "c.csv"\n[window]\nhours = "9 to 5"\n', "window.hours = '9 to 5' should look like \"09:00-20:00\""),
    ('contacts = "c.csv"\n[window]\nhours = "09:00-20:00"\nfallback_timezone = "Moon/Base"\n',
     "window.fallback_timezone = 'Moon/Base' is not a known time zone; use an IANA name such as America/New_York"),
    ('name = "x"\n', 'the campaign needs contacts = "FILE.csv"'),
    ('contacts = "c.csv"\n[sandbox]\nfial = 0.1\n', "unknown key 'sandbox.fial'; did you mean 'sandbox.fail'?"),
    ('contacts = "c.csv"\ndnc = [1]\n', "dnc = [1] should be a list of strings"),
    ('contacts = "c.csv"\n[window]\nhours = "09:00-20:00"\ndays = [1]\n', "window.days = [1] should be a list of strings"),
    ('contacts = "c.csv\n', "not valid TOML (Illegal character '\\n' (at line 1, column 18))"),
])
def test_mistakes_in_a_campaign_file_name_the_key_and_the_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as error:
        Campaign.from_toml(path)
    assert str(error.value) == f"{path}: {message}"


@pytest.mark.parametrize("settings, message", [
    ({"region": "XX"}, "unknown region 'XX'; use a two-letter ISO country code such as US, GB or IN (region)"),
    ({"provider": "twilio"}, "unknown provider 'twilio'; use one of: formant, agents"),
    ({"rate": 0}, "rate must be a positive number of calls per second, not 0"),
    ({"rate": float("inf")}, "rate must be a positive number of calls per second, not inf"),
    ({"concurrency": 0}, "concurrency must be at least 1, not 0"),
    ({"max_attempts": 0}, "max_attempts must be at least 1, not 0"),
    ({"on_outside_window": "later"}, "on_outside_window = 'later' should be one of: skip, wait, schedule"),
    ({"sandbox": {"fail": 2}}, "bad [sandbox] settings: fail must be a probability between 0 and 1, got 2"),
])
def test_bad_values_say_what_is_allowed(settings, message):
    with pytest.raises(UsageError) as error:
        Campaign(contacts=Path("c.csv"), **settings)
    assert str(error.value) == message


@pytest.mark.parametrize("settings, message", [
    ({"window": CallingWindow.parse("09:00-17:00"), "on_outside_window": "schedule"},
     'on_outside_window = "schedule" needs the formant provider; the agents provider cannot schedule calls'),
    ({"parameters": ParameterMap(conversation_id_column="Thread")},
     "parameters.conversation_id_column is a Formant field; the agents provider has none"),
])
def test_formant_only_features_are_refused_for_the_agents_api(settings, message):
    campaign = Campaign(contacts=Path("c.csv"), provider="agents", agent_id=1, base_url="http://h", **settings)
    with pytest.raises(UsageError) as error:
        campaign.check_can_call()
    assert str(error.value) == message


def test_a_missing_campaign_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert capsys.readouterr().err == f"dialer: {tmp_path / 'nope.toml'}: no such campaign file\n"


@pytest.mark.parametrize("header, name", [("Customer Name", "customer_name"), ("E-mail (work)", "e_mail_work"),
                                          ("  ID ", "id"), ("%%", "column")])
def test_other_columns_are_sent_under_snake_case_names(header, name):
    assert snake_case(header) == name
