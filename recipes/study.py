"""Arms side by side on a k-fold split by article, and optionally on the FLORES low-resource benchmark:
base / X-X / X-Y / hybrid on XQuAD-R, or base / hybrid / DAPT-merge + hybrid / DAPT-route + hybrid.

    accelerate launch recipes/study.py --config recipes/hybrid/xquad_r_study.yaml --data PATH/xquad-r
    accelerate launch recipes/study.py --config recipes/dapt/study.yaml
"""

import logging
import sys

from hf_hybrid.cli import exit_on_user_error
from hf_hybrid.config import parse_config
from hf_hybrid.study import StudyConfig, run_study
from hf_hybrid.study_report import study_markdown


@exit_on_user_error
def main(argv):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(study_markdown(run_study(parse_config(StudyConfig, argv))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
