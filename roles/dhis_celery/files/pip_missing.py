"""Print, as JSON, the requirements given as arguments that this Python's environment does not
satisfy (run by the dhis_celery role with the virtualenv's python, before pip).

Reads installed versions from importlib.metadata and parses requirements with pip's own vendored
`packaging`: about 0.1 s, where `pip install` on satisfied pins takes over a second. A
requirement it cannot parse or check (a URL, a path) is reported missing, so pip handles it.
"""

import importlib.metadata
import json
import sys

from pip._vendor.packaging.requirements import Requirement


def satisfied(line: str) -> bool:
    try:
        requirement = Requirement(line)
        if requirement.url:
            return False
        if requirement.marker and not requirement.marker.evaluate():
            return True  # not meant for this Python or platform
        return requirement.specifier.contains(importlib.metadata.version(requirement.name), prereleases=True)
    except Exception:  # anything unclear is left to pip
        return False


print(json.dumps([line for line in sys.argv[1:] if not satisfied(line)]))
