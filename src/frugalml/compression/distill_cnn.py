"""Distillation of a large image network into the small CNN: a ``small_cnn`` student, trained from scratch on the
calibration images to reproduce the teacher's class probabilities (its soft labels), at a resolution of its own.

The teacher is an EfficientNet-Lite0 model (fine-tuned, or frozen with a linear head): millions of weights at
128-224 px. The student has about 24,000 at 32-64 px, so it is cheaper on every count, decoding aside; what the
guard decides is whether it is still on par, overall and per group. Soft labels carry more than the teacher's
answers (how sure it is, which images it finds alike): Hinton, Vinyals and Dean, "Distilling the knowledge in a
neural network" (2015), at temperature 1. Its training images are only the calibration rows, which the search
gives every technique; the more there are, the better the student.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Technique, final_estimator, register_technique, with_final


@dataclass(frozen=True)
class CNNDistillConfig:
    resolution: int = 32  # the student's input, pixels per side (a default: conformance builds one)


def _applies(pipeline) -> bool:
    from ..candidates.image import ImageModel

    teacher = final_estimator(pipeline)
    return (isinstance(teacher, ImageModel) and not teacher.compressed
            and teacher.features_.kind.startswith("efficientnet-lite0"))


def _settings(pipeline) -> list[CNNDistillConfig]:
    return [CNNDistillConfig(r) for r in (32, 64) if r <= final_estimator(pipeline).resolution]  # smallest first


def _apply(pipeline, cfg: CNNDistillConfig, calibration):
    from ..candidates.image import ImageFeatures, SmallCNN

    X, _ = calibration
    teacher = final_estimator(pipeline)
    images = pipeline[:-1].transform(X)
    features = ImageFeatures("pixels", cfg.resolution, channels=teacher.features_.channels_)
    student = SmallCNN(features, seed=getattr(teacher, "seed", 0))
    return with_final(pipeline, student.fit_soft(images, teacher.predict_proba(images), teacher.classes_))


register_technique(Technique("cnn-distill", CNNDistillConfig, _apply, _applies, _settings, needs_data=True, stage=0,
                             description="an EfficientNet image model distilled into the small CNN at 32 or 64 px, "
                                         "trained on the calibration images to reproduce its probabilities"))
