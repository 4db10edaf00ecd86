import pytest

from mvft_helpers.prompts import DEFAULTS, PROMPTS, ContractError, get_prompt, parse_json_answer, requested_fields


def test_every_prompt_declares_its_contract_and_defaults_exist():
    for pid, p in PROMPTS.items():
        assert pid == f"{p.task}/{p.version}"
        assert requested_fields(p.text) == list(p.fields)
    assert all(d in PROMPTS for d in DEFAULTS.values())
    assert get_prompt("target_text/v2").placeholders == ["modification"]
    with pytest.raises(ValueError, match="needs the value 'modification'"):
        get_prompt("target_text/v2").render()
    with pytest.raises(ValueError, match="allowed values"):
        get_prompt("caption/v9")


@pytest.mark.parametrize("answer", [
    '{"caption": "a red circle"}',
    'Sure! {"caption": "a red circle"} Hope this helps.',
    '```json\n{"caption": "a red circle"}\n```',
])
def test_parser_accepts_json_in_its_usual_wrappings(answer):
    assert parse_json_answer(answer, ["caption"]) == {"caption": "a red circle"}


@pytest.mark.parametrize("answer,reason", [
    ("", "empty answer"), ("a red circle", "no JSON object"), ('{"caption": "a red', "no JSON object"),
    ('{"caption": a red circle}', "invalid JSON"), ('{"text": "x"}', "missing field"),
    ('{"caption": "  "}', "empty field"), ('{"caption": 3}', "empty field"),
])
def test_parser_names_why_an_answer_breaks_the_contract(answer, reason):
    with pytest.raises(ContractError) as e:
        parse_json_answer(answer, ["caption"])
    assert e.value.reason == reason
