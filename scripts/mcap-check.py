#!/usr/bin/env python3
"""Reads baf-record's files with the Python mcap package (an independent
MCAP reader) and checks the messages per channel against expected.json
(written by baf-record's samples_for_other_readers test) or, for files the
VM tests wrote, against each NAME.info.json (`baf-record info --json`:
each topic's records, and a baf.loss message per gap), and that every
record decodes: its 40-byte little-endian header's len is the payload's
length and its seq's low 32 bits are the MCAP sequence.

Usage: mcap-check.py DIR"""
import json
import os
import struct
import sys

from mcap.reader import make_reader


def check(path, want):
    counts = {}
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert summary is not None, f"{path}: no summary"
        for _schema, channel, message in reader.iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.message_encoding == "baf.record":
                length, _flags, seq = struct.unpack_from("<IIQ", message.data)
                assert length == len(message.data) - 40, f"{path}: bad len"
                assert seq & 0xFFFFFFFF == message.sequence, f"{path}: bad seq"
                assert "ring_size" in channel.metadata, f"{path}: no metadata"
            elif channel.topic == "baf.loss":
                gap = json.loads(message.data)
                assert gap["lost"] > 0 and "before_seq" in gap, f"{path}: bad gap"
        stats = summary.statistics
        assert stats.message_count == sum(counts.values()), f"{path}: statistics"
    assert counts == want, f"{path}: messages per channel {counts}, expected {want}"
    return sum(counts.values())


def main():
    d = sys.argv[1]
    if os.path.exists(os.path.join(d, "expected.json")):
        with open(os.path.join(d, "expected.json")) as f:
            expected = json.load(f)
    else:
        expected = {}
        for info_name in os.listdir(d):
            if not info_name.endswith(".info.json"):
                continue
            with open(os.path.join(d, info_name)) as f:
                info = json.load(f)
            want = {t: v["records"] for t, v in info["topics"].items() if v["records"]}
            gaps = sum(v["gaps"] for v in info["topics"].values())
            if gaps:
                want["baf.loss"] = gaps
            expected[info_name[: -len(".info.json")]] = want
    assert expected, "no sample files"
    for name, want in sorted(expected.items()):
        n = check(os.path.join(d, name), want)
        print(f"mcap (Python): {name}: {n} messages, per channel as expected")


if __name__ == "__main__":
    main()
