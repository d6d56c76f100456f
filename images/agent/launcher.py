#!/usr/bin/python3
"""/usr/lib/railyard/update-agent: runs the update agent, the railyard_agent package kept in the `agent`
directory beside this file (/usr/lib/railyard/agent), with the command line it was given.

railyard-update-agent.service and railyard-update start it with the image's python3 (stdlib only).
"""

from __future__ import annotations

import os
import runpy
import sys

AGENT_LIB = os.path.join(os.path.dirname(os.path.realpath(__file__)), "agent")


def main() -> None:
    sys.dont_write_bytecode = True  # the package lives in /usr, an update slot: leave it as installed
    sys.path.insert(0, AGENT_LIB)
    runpy.run_module("railyard_agent", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
