"""manage.py seed_demo: the two demo constitutions, published once, idempotently."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command

from constitutions import yaml_io
from constitutions.models import Constitution, ConstitutionVersion

pytestmark = pytest.mark.django_db
DEMO_DIR = Path(yaml_io.__file__).parent / "demo_data"


def test_seed_demo_publishes_v1_of_both_demo_constitutions_and_is_idempotent():
    call_command("seed_demo", stdout=None)
    call_command("seed_demo", stdout=None)
    assert set(Constitution.objects.values_list("slug", flat=True)) == {
        "cbrn-demo",
        "fraud-demo",
    }
    assert ConstitutionVersion.objects.count() == 2
    cbrn = Constitution.objects.get(slug="cbrn-demo")
    assert cbrn.name == "CBRN weapons (demo)"
    version = cbrn.latest_version()
    assert version.number == 1 and version.content == cbrn.draft_content()
    kinds = [c["kind"] for c in version.content["categories"]]
    assert kinds.count("restricted") >= 4 and kinds.count("permitted") >= 5


@pytest.mark.parametrize("path", sorted(DEMO_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_demo_files_are_valid_and_their_categories_have_4_to_8_short_examples(path):
    content = yaml_io.parse_yaml(path.read_text())
    for category in content["categories"]:
        assert category["description"]
        assert 4 <= len(category["example_queries"]) <= 8
        # High-level intent only: short single sentences, no quantities.
        for query in category["example_queries"]:
            assert len(query) < 120
            assert not re.search(r"\d+\s*(g|kg|mg|ml|l|%|grams?|litres?)\b", query)
