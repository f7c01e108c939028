"""Procedural stickman poses and paired training data: stickman drawing -> figure in that pose.

A *pose* is a dict ``joint -> (x, y)`` in image coordinates normalised to [0, 1]^2 (x to the right,
y downwards). The joints (``JOINTS``) are the ones a person draws in a stickman::

    head                 centre of the head circle
    neck                 where the arms and the body line meet (stickman shoulders)
    pelvis               where the legs meet the body line
    l_elbow, l_hand      the figure's left arm  (on the image's right in a front view)
    r_elbow, r_hand      the figure's right arm (on the image's left in a front view)
    l_knee, l_foot       left leg
    r_knee, r_foot       right leg

``LIMBS`` lists the bones drawn as lines. The head is a circle of radius
``HEAD_RADIUS * |head - neck|`` around ``head``; the (short) bone head -> neck is drawn from the
circle's edge to the neck.

Two renderers share a pose:

* ``draw_stickman`` - the conditioning image: dark strokes on a light background, like a user's
  upload or a browser sketch pad. Styles: ``"clean"`` (straight black lines, ring head),
  ``"random"`` (the training style: random stroke width / grey level / ring or dot head, smooth
  wobble, joint offsets, overshoot) and ``"handdrawn"`` (a held-out style: jittery polylines with
  varying pressure, limbs off their joints, ring heads with a gap, slight rotation).
* ``draw_figure`` - the target image: a paper-doll person (skin, hair, shirt, trousers / shorts /
  skirt / dress, shoes) whose limbs follow the bones, with random colours and body width on a
  plain pastel background.

``make_pairs`` renders deterministic batches (``evaluation.pose_metrics`` measures how well a generated
figure covers a stickman drawing). Everything is pure numpy + PIL ImageDraw (no scipy).

Modules: ``poses`` (the skeleton, ``random_pose`` and each kind's angles), ``stickman`` (``draw_stickman``),
``figure`` (``draw_figure``), ``render`` (``make_pairs``, ``write_examples``).
"""
from .poses import HEAD_RADIUS, JOINTS, LIMBS, POSE_KINDS, STYLES, Pose, random_pose
from .render import MIN_BG_DISTANCE, draw_figure, draw_stickman, make_pairs, write_examples

__all__ = ["HEAD_RADIUS", "JOINTS", "LIMBS", "POSE_KINDS", "STYLES", "Pose", "random_pose", "MIN_BG_DISTANCE",
           "draw_figure", "draw_stickman", "make_pairs", "write_examples"]
