"""The rule table is the contract: every rule has a test that names it."""

from pathlib import Path

from xds.rules import RULES


def test_every_rule_has_a_test():
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py") if p.name != Path(__file__).name)
    untested = [rule_id for rule_id in RULES if f'"{rule_id}"' not in tests]
    assert untested == [], f"rules without a test: {untested}"


def test_every_rule_message_fills_from_its_own_placeholders():
    import string

    for rule in RULES.values():
        names = {field for _, field, _, _ in string.Formatter().parse(rule.message) if field}
        text = rule.error(**{n: f"<{n}>" for n in names}).context
        assert "{" not in text and text, rule.id
