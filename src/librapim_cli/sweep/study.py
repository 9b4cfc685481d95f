"""Studies: samplers, creating or resuming a study bound to its sweep spec (the fingerprint), loading one.

A study records the spec that made it (study user attributes ``librapim.search``, ``librapim.objectives``
and ``librapim.spec``); resuming it with a spec whose search space, objectives or base differ is refused.
"""

from __future__ import annotations

from typing import Any

import optuna

from ..errors import LibrapimError, SpecError
from .space import grid
from .spec import SweepSpec
from .storage import StorageError, first_line, open_storage, parse_storage
from .validate import check_seed, sampler_name

_SAMPLER_CLASSES: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
    "random": optuna.samplers.RandomSampler, "grid": optuna.samplers.GridSampler,
}


def make_sampler(name: str, spec: SweepSpec, seed: int | None) -> optuna.samplers.BaseSampler:
    """A sampler by name (constraints reach every sampler through ``trial.set_constraint`` in the objective)."""
    cls = _SAMPLER_CLASSES[sampler_name(name)]
    check_seed(seed)
    kwargs: dict[str, Any] = {"seed": seed}
    if cls is optuna.samplers.GridSampler:
        kwargs["search_space"] = grid(spec)
    return cls(**kwargs)


def open_study(spec: SweepSpec, storage: optuna.storages.BaseStorage, study_name: str,
               sampler: optuna.samplers.BaseSampler | None = None, where: str = "") -> optuna.Study:
    """Create the study or load it (resume); SpecError if an existing study was made by a different spec."""
    try:
        study = optuna.create_study(storage=storage, sampler=sampler, study_name=study_name,
                                    directions=spec.directions, load_if_exists=True)
    except LibrapimError:
        raise
    except Exception as exc:
        raise StorageError(f"cannot open study '{study_name}' in {where or 'the storage'} ({first_line(exc)})") from None
    attrs = study.user_attrs
    fingerprint = spec.search_fingerprint()
    if "librapim.search" not in attrs:
        study.set_user_attr("librapim.search", fingerprint)
        study.set_user_attr("librapim.objectives", [[o.metric, o.direction] for o in spec.objectives])
        study.set_user_attr("librapim.spec", spec.model_dump(mode="json"))
    elif attrs["librapim.search"] != fingerprint or [d.name.lower() for d in study.directions] != spec.directions:
        raise SpecError(f"study '{study_name}' in {where or 'the storage'} was made by a different sweep spec "
                        f"(parameters, objectives or base differ); give a new name with --study")
    return study


def load_study(storage: Any, study_name: str) -> optuna.Study:
    """Load an existing study; ``storage`` is a --storage string or an optuna storage object."""
    where = storage
    if isinstance(storage, str) or storage is None:
        ref = parse_storage(storage)
        if ref.kind == "memory":
            raise StorageError("an in-memory study cannot be read back; give the --storage the sweep used")
        where = ref.display
        storage = open_storage(ref)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise StorageError(f"no study '{study_name}' in {where} (studies there: {names})") from None
