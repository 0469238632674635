"""Print, as JSON, the requirements given as arguments that this Python's environment does not
satisfy (run by the dhis_celery role with the virtualenv's python, as the virtualenv's owner,
before pip).

Reads installed versions from importlib.metadata and parses requirements with pip's own vendored
`packaging`: about 0.1 s, where `pip install` on satisfied pins takes over a second. Extras count:
`celery[redis]` is satisfied only when what the `redis` extra pulls in is installed too. A
requirement it cannot parse or check (a URL, a path) is reported missing, so pip handles it.
"""

import importlib.metadata
import json
import sys

from pip._vendor.packaging.requirements import Requirement


def satisfied(line: str, depth: int = 0) -> bool:
    try:
        requirement = Requirement(line)
        if requirement.url:
            return False
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            return True  # not meant for this Python or platform
        if not requirement.specifier.contains(importlib.metadata.version(requirement.name), prereleases=True):
            return False
        for extra in requirement.extras if depth < 5 else ():
            for dependency in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(dependency)
                if (
                    needed.marker
                    and needed.marker.evaluate({"extra": extra})
                    and not needed.marker.evaluate({"extra": ""})
                ):
                    needed.marker = None
                    if not satisfied(str(needed), depth + 1):
                        return False
        return True
    except Exception:  # anything unclear is left to pip
        return False


print(json.dumps([line for line in sys.argv[1:] if not satisfied(line)]))
