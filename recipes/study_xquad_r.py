"""The method's claim on real data: base / X-X / X-Y / hybrid on XQuAD-R, 2-fold by article.

    accelerate launch recipes/study_xquad_r.py --config recipes/hybrid/xquad_r_study.yaml --data PATH/xquad-r
"""

import logging
import sys

from hf_hybrid.cli import exit_on_user_error
from hf_hybrid.config import parse_config
from hf_hybrid.study import StudyConfig, run_study, study_table


@exit_on_user_error
def main(argv):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    study = run_study(parse_config(StudyConfig, argv))
    print(study_table(study["mean_over_folds"], study["n_languages"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
