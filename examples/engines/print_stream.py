#!/usr/bin/env python3
"""A media-stream engine that shows what wasmpbx sends: each call's start and custom
parameters, then once a second the loudness of each track (dBFS), then the stop.

    pip install websockets
    python3 examples/engines/print_stream.py 9000     # stream_url = "ws://127.0.0.1:9000/"
"""
import asyncio
import base64
import json
import math
import sys

import websockets


def ulaw_decode(byte):
    b = ~byte & 0xFF
    magnitude = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 0x07)) - 0x84
    return -magnitude if b & 0x80 else magnitude


async def stream(websocket):
    call, energy, count = "?", {}, {}
    async for text in websocket:
        message = json.loads(text)
        event = message["event"]
        if event == "start":
            call = message["start"]["callSid"]
            print(f"{call}: start {message['start']['tracks']} {message['start']['customParameters']}")
        elif event == "media":
            media = message["media"]
            track = media["track"]
            samples = [ulaw_decode(b) for b in base64.b64decode(media["payload"])]
            energy[track] = energy.get(track, 0.0) + sum(s * s for s in samples)
            count[track] = count.get(track, 0) + len(samples)
            if count[track] >= 8000:  # a second of this track
                rms = math.sqrt(energy[track] / count[track]) or 1e-9
                print(f"{call}: {track:8} {20 * math.log10(rms / 32768):6.1f} dBFS")
                energy[track], count[track] = 0.0, 0
        elif event == "stop":
            print(f"{call}: stop")


async def main(port):
    async with websockets.serve(stream, "127.0.0.1", port, max_size=2**16):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 9000))
