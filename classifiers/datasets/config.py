"""A generation run's settings: defaults, checks, and what a constitution version
needs before data can be generated from it.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from classifiers.ml.data import prompts as ml_data
from classifiers.ml.data.splits import SPLITS
from classifiers.ml.types import RESTRICTED

LOCAL = "local"
SAVE_BATCH = 500  # rows per bulk_create
DEFAULT_REDTEAM_TEMPLATES = 4  # new templates red-teamed per run that uses them
# Traffic pools mixed in as benign prompts: at most this many per pool per run,
# spread over the pool's splits (calibration holds the largest share).
DEFAULT_TRAFFIC_LIMIT = 1000
MAX_TRAFFIC_LIMIT = 50_000
GENERATE_CONFIG_FIELDS = frozenset(f.name for f in fields(ml_data.GenerateConfig))
# Options of a run that are not GenerateConfig's (the run reads them itself).
RUN_OPTIONS = frozenset(
    {
        "redteam_templates",
        "traffic_pools",
        "traffic_limit",
        "traffic_generated_replies",
        "traffic_recorded_replies",
    }
)


class StartError(ValueError):
    """A dataset cannot be started with these settings; the message says why."""


def version_problems(version: Any) -> list[str]:
    """Why `version` cannot be used for generation ([] when it can)."""
    categories = version.content.get("categories", [])
    kinds = {c.get("kind") for c in categories}
    if RESTRICTED not in kinds or "permitted" not in kinds:
        return [
            f"{version} needs at least one restricted and one permitted category "
            "(a classifier learns the boundary between the two)"
        ]
    return []


# Configs stored before prefilled openers existed have no opener_share; they meant
# none, whatever GenerateConfig's default is now.
OLD_CONFIG_OPENER_SHARE = 0.0


def ml_generate_config(config: dict[str, Any]) -> ml_data.GenerateConfig:
    """The ml-layer config for a stored dataset config."""
    known = {k: v for k, v in config.items() if k in GENERATE_CONFIG_FIELDS}
    known.setdefault("opener_share", OLD_CONFIG_OPENER_SHARE)
    for name in ("transforms", "heldout_families", "only_categories"):
        known[name] = tuple(known.get(name) or ())
    return ml_data.GenerateConfig(**known)


def generate_config(**options: Any) -> dict[str, Any]:
    """A full GenerateConfig as a JSON-able dict; unknown keys are an error."""
    unknown = set(options) - GENERATE_CONFIG_FIELDS - RUN_OPTIONS
    if unknown:
        raise StartError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
    redteam_templates = int(options.pop("redteam_templates", DEFAULT_REDTEAM_TEMPLATES))
    traffic_pools = options.pop("traffic_pools", None) or []
    traffic_limit = options.pop("traffic_limit", None) or DEFAULT_TRAFFIC_LIMIT
    reply_caps = {
        name: options.pop(name, None)
        for name in ("traffic_generated_replies", "traffic_recorded_replies")
    }
    for name in ("transforms", "heldout_families", "only_categories"):
        options[name] = tuple(options.get(name) or ())
    try:
        cfg = ml_data.GenerateConfig(**options)
    except TypeError as err:
        raise StartError(str(err)) from err
    config = asdict(cfg)
    config["transforms"] = list(cfg.transforms)
    config["heldout_families"] = list(cfg.heldout_families)
    config["only_categories"] = list(cfg.only_categories)
    config["redteam_templates"] = redteam_templates
    if traffic_pools:
        config["traffic_pools"] = list(traffic_pools)
        config["traffic_limit"] = traffic_limit
        # At most this many pool prompts get the generator's reply, and at most
        # that many of the others the reply recorded with them (datasets/traffic.py).
        config.update({k: v for k, v in reply_caps.items() if v is not None})
    return config


def check_config(config: dict[str, Any]) -> list[str]:
    """Problems with transform names, families and sizes ([] when fine)."""
    from classifiers.ml.data.transforms import FAMILIES, TRANSFORMS

    problems = []
    unknown = [t for t in config.get("transforms", []) if t not in TRANSFORMS]
    if unknown:
        problems.append(f"unknown transform(s): {', '.join(unknown)}")
    bad_families = [f for f in config.get("heldout_families", []) if f not in FAMILIES]
    if bad_families:
        problems.append(f"unknown transform family(ies): {', '.join(bad_families)}")
    for family in config.get("heldout_families", []):
        if family in FAMILIES and not set(FAMILIES[family]) & set(config["transforms"]):
            problems.append(
                f"held-out family {family!r} has none of its transforms selected "
                f"({', '.join(FAMILIES[family])})"
            )
    if not 1 <= int(config.get("per_category", 0)) <= 500:
        problems.append("size per category must be between 1 and 500")
    if not 0 <= int(config.get("restricted_per_category") or 0) <= 500:
        problems.append("size per restricted category must be between 1 and 500 (0: the same)")
    opener_share = config.get("opener_share", OLD_CONFIG_OPENER_SHARE)
    if (
        isinstance(opener_share, bool)
        or not isinstance(opener_share, int | float)
        or not 0 <= opener_share <= 1
    ):
        problems.append("the share of prefilled openers must be between 0 and 1")
    problems += _split_problems(config)
    problems += _traffic_problems(config)
    return problems


def _traffic_problems(config: dict[str, Any]) -> list[str]:
    pools = config.get("traffic_pools", [])
    if not isinstance(pools, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) for p in pools
    ):
        return ["traffic pools must be a list of pool ids"]
    limit = config.get("traffic_limit", DEFAULT_TRAFFIC_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not (
        1 <= limit <= MAX_TRAFFIC_LIMIT
    ):
        return [f"prompts per traffic pool must be between 1 and {MAX_TRAFFIC_LIMIT}"]
    if (
        config.get("traffic_recorded_replies") is not None
        and config.get("traffic_generated_replies") is None
    ):
        return [
            "recorded traffic replies need a cap on generated ones too (without one, "
            "every pool prompt gets the generator's reply)"
        ]
    for name in ("traffic_generated_replies", "traffic_recorded_replies"):
        cap = config.get(name)
        if cap is not None and (
            isinstance(cap, bool)
            or not isinstance(cap, int)
            or not 0 <= cap <= MAX_TRAFFIC_LIMIT
        ):
            what = name.removeprefix("traffic_").replace("_", " ")
            return [f"{what} must be between 0 and {MAX_TRAFFIC_LIMIT}"]
    return []


def _split_problems(config: dict[str, Any]) -> list[str]:
    fractions = {
        name: config.get(
            f"{name}_fraction", getattr(ml_data.GenerateConfig, f"{name}_fraction")
        )
        for name in SPLITS
    }
    try:
        fractions = {name: float(value) for name, value in fractions.items()}
    except (TypeError, ValueError):
        return ["split fractions must be numbers"]
    # Training needs sources; thresholds need the calibration split's benign
    # examples; the report needs the test split. Validation may be empty.
    empty = [
        name for name in ("train", "calibration", "test") if not fractions[name] > 0
    ]
    problems = []
    if any(not 0 <= f <= 1 for f in fractions.values()):
        problems.append("each split fraction must be between 0 and 1")
    elif empty:
        problems.append(f"split fraction(s) must be above 0: {', '.join(empty)}")
    elif abs(sum(fractions.values()) - 1) > 0.001:
        shown = ", ".join(f"{n}={f:g}" for n, f in fractions.items())
        problems.append(f"split fractions must add up to 1 ({shown})")
    return problems


def category_problems(version: Any, config: dict[str, Any]) -> list[str]:
    """Names in only_categories that the version does not have."""
    only = config.get("only_categories") or []
    if not isinstance(only, list | tuple) or not all(isinstance(n, str) for n in only):
        return ["the categories to generate for must be a list of names"]
    names = {c.name for c in version.to_spec().categories}
    unknown = [name for name in only if name not in names]
    if unknown:
        return [
            f"{version} has no categor{'y' if len(unknown) == 1 else 'ies'} "
            + ", ".join(repr(n) for n in unknown)
        ]
    return []
