"""Drive Warden's MCP server with the official Python MCP client (mcp==2.3.0).

Usage: mcp_client.py <stdio|http> <auto|legacy> <calls.json>

Connection settings come from the environment: WARDEN_BIN, WARDEN_DATA_DIR,
WARDEN_CACHE_DIR and WARDEN_TOKEN for stdio (the client launches `warden mcp`),
WARDEN_MCP_URL and WARDEN_TOKEN for HTTP. `calls.json` is a list of
[tool_name, arguments] pairs; an argument "$approval" is replaced by the
approval id the last held call answered with. Prints one JSON object: the listed tools with
their schemas, and each call's isError, structuredContent and text.
"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def server(transport: str, token: str):
    if transport == "stdio":
        env = {
            "WARDEN_TOKEN": token,
            "WARDEN_DATA_DIR": os.environ["WARDEN_DATA_DIR"],
            "WARDEN_CACHE_DIR": os.environ["WARDEN_CACHE_DIR"],
            "PATH": os.environ.get("PATH", ""),
        }
        return StdioServerParameters(command=os.environ["WARDEN_BIN"], args=["mcp"], env=env)
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    return streamable_http_client(os.environ["WARDEN_MCP_URL"], http_client=http)


async def main() -> None:
    transport, mode, calls_path = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(calls_path) as f:
        calls = json.load(f)
    token = os.environ["WARDEN_TOKEN"]
    out = {"tools": [], "results": []}
    async with Client(server(transport, token), mode=mode) as client:
        out["protocol_version"] = str(client.session.protocol_version)
        listed = await client.list_tools()
        for t in listed.tools:
            out["tools"].append(
                {
                    "name": t.name,
                    "description": t.description,
                    "inputSchema": t.input_schema,
                    "outputSchema": t.output_schema,
                }
            )
        approval = None
        for name, args in calls:
            # "$approval" stands for the approval id the last held call
            # answered with (its `warden/approval_id` meta).
            args = {k: (approval if v == "$approval" else v) for k, v in args.items()}
            r = await client.call_tool(name, args)
            if r.meta and r.meta.get("warden/approval_id"):
                approval = r.meta["warden/approval_id"]
            out["results"].append(
                {
                    "name": name,
                    "isError": bool(r.is_error),
                    "structuredContent": r.structured_content,
                    "text": [c.text for c in r.content if getattr(c, "type", None) == "text"],
                    "meta": r.meta,
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
