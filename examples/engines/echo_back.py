#!/usr/bin/env python3
"""A bidirectional media-stream engine: it plays each caller back to themselves, two
seconds at a time, and marks the end of each reply (wasmpbx sends the mark back once the
caller has heard it). A script starts it with a `media-stream` action whose engine-audio
is `replace` (or `mix`) and whose tracks include `inbound`.

    pip install websockets
    python3 examples/engines/echo_back.py 9001     # url = "ws://127.0.0.1:9001/"
"""
import asyncio
import base64
import json
import sys

import websockets

SECONDS = 2


async def stream(websocket):
    call, heard, replies = "?", bytearray(), 0
    async for text in websocket:
        message = json.loads(text)
        event = message["event"]
        if event == "start":
            call = message["start"]["callSid"]
            print(f"{call}: start {message['start']['customParameters']}")
        elif event == "media" and message["media"]["track"] == "inbound":
            heard += base64.b64decode(message["media"]["payload"])
            if len(heard) >= 8000 * SECONDS:
                replies += 1
                payload = base64.b64encode(bytes(heard)).decode()
                heard.clear()
                await websocket.send(json.dumps({"event": "media", "media": {"payload": payload}}))
                await websocket.send(json.dumps({"event": "mark", "mark": {"name": f"reply-{replies}"}}))
        elif event == "mark":
            print(f"{call}: the caller has heard {message['mark']['name']}")
        elif event == "stop":
            print(f"{call}: stop")


async def main(port):
    async with websockets.serve(stream, "127.0.0.1", port, max_size=2**16):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9001))
