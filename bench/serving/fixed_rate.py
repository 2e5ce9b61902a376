"""Open-loop load at a fixed request rate (wrk2-style): requests are scheduled every 1/RATE s
over keep-alive connections, and each latency is measured from its scheduled send time, so a
slow server cannot hide queueing (no coordinated omission).

usage: fixed_rate.py HOST PORT PATH BODY.json RATE SECONDS [CONNECTIONS]
"""
import asyncio
import sys
import time


async def main():
    host, port, path, body_file, rate, seconds = sys.argv[1:7]
    conns = int(sys.argv[7]) if len(sys.argv) > 7 else 16
    rate, seconds, port = float(rate), float(seconds), int(port)
    body = open(body_file, "rb").read()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    request = head + body
    pool = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies, errors = [], 0

    async def one(scheduled):
        nonlocal errors
        reader, writer = await pool.get()
        try:
            writer.write(request)
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if b" 200 " not in status:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)
        finally:
            pool.put_nowait((reader, writer))

    n = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
    print(
        f"requests {len(latencies)} errors {errors} achieved {len(latencies) / elapsed:.0f} req/s "
        f"p50 {pct(0.50):.3f} ms p90 {pct(0.90):.3f} ms p99 {pct(0.99):.3f} ms p99.9 {pct(0.999):.3f} ms max {latencies[-1] * 1e3:.3f} ms"
    )


asyncio.run(main())
