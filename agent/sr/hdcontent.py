"""The one place the agent reaches inside highdicom: a ready content tree attached to a new SR document.

highdicom's SR constructors deep-copy the content they are given, parse the copy again and search it for
references (seconds for a large report). ``agent.sr.write`` builds the tree with highdicom's own classes,
gives the constructor the root container without its children, and attaches the tree with
:func:`attach_content`: the dataset's Content Sequence, and the parsed tree highdicom keeps for its public
``content`` property (its private ``_content`` attribute, set exactly as highdicom's own constructor and
``from_dataset`` set it). ``tests/unit/sr/test_hdcontent.py`` pins this: the result equals what the public
constructor makes from the whole tree, and the highdicom code it relies on is still what we read.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
from pydicom.tag import Tag

CONTENT_SEQUENCE = Tag(0x0040, 0xA730)


def attach_content(sr: Any, root: Any) -> None:
    """Give ``sr`` (made from ``root`` without children) the whole tree of ``root``."""
    sr[CONTENT_SEQUENCE] = root[CONTENT_SEQUENCE]
    sr._content = hd.sr.ContentSequence([root], is_root=True)
