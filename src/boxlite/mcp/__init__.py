"""An MCP server over a BoxLite runtime: ``boxlite mcp`` (stdio) and ``boxlite serve --mcp``
(streamable HTTP at ``/mcp``). See docs/mcp.md.

An MCP client is an agent nobody vouches for: every tool bounds what it moves (``limits``), box
paths are paths in the box, and no tool names a host path. Nothing here is imported by
``import boxlite`` or by the CLI's other commands (the ``mcp`` SDK loads only when serving).
"""
