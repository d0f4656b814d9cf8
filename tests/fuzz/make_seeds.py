#!/usr/bin/env python3
"""make_seeds.py -- writes the seed corpus of every fuzz target to
tests/fuzz/corpus/<target>/ (small, valid or nearly valid inputs that get
libFuzzer past the first length and opcode checks).  The files are committed;
re-run this after changing a wire format:  python3 tests/fuzz/make_seeds.py

Layouts follow common/wire.h (packed, little endian), common/segment.h,
proto/cram.proto (a minimal protobuf encoder below), transport/tcp.c frames
and transport/xdp_proto.h packets.  Multi-message inputs join messages with
the separator of fuzz_common.h.
"""
import os
import struct
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"-FZ-"

# ---- common/wire.h --------------------------------------------------------
SVC_MASTER, SVC_BACKUP, SVC_COORD, SVC_PING = 1, 2, 3, 4
OP = dict(PING=1, ENLIST=10, GET_SERVER_LIST=11, CREATE_TABLE=12, TAKE_TABLET=20,
          DROP_TABLET=21, GET_SERVER_STATS=22, SERVER_LIST_UPDATE=23, RECOVER=25,
          READ=30, WRITE=31, REMOVE=32, INCR=33, MULTI_READ=34, MULTI_WRITE=35,
          MULTI_REMOVE=36, ENUMERATE=37, BK_WRITE=40, BK_FREE=41, BK_LIST=42,
          BK_READ=43, BK_RDATA=44)


def hdr(op, svc):
    return struct.pack("<HHI", op, svc, 0)


def rules(given=0, dne=0, ex=0, le=0, ne=0):
    return struct.pack("<QBBBBI", given, dne, ex, le, ne, 0)


def rpcid():
    return struct.pack("<QQ", 7, 1)


def m_read(table, key, tgt=42):
    return hdr(OP["READ"], SVC_MASTER) + struct.pack("<QQ", tgt, table) + rules() + \
        struct.pack("<H6x", len(key)) + key


def m_remove(table, key, tgt=42):
    return hdr(OP["REMOVE"], SVC_MASTER) + struct.pack("<Q", tgt) + rpcid() + \
        struct.pack("<Q", table) + rules() + struct.pack("<H6x", len(key)) + key


def m_write(table, key, value, tgt=42, r=None):
    return hdr(OP["WRITE"], SVC_MASTER) + struct.pack("<Q", tgt) + rpcid() + \
        struct.pack("<Q", table) + (r or rules()) + struct.pack("<IHH", len(value), len(key), 0) + key + value


def m_incr(table, key, delta, tgt=42):
    return hdr(OP["INCR"], SVC_MASTER) + struct.pack("<Q", tgt) + rpcid() + \
        struct.pack("<Q", table) + rules() + struct.pack("<qH6x", delta, len(key)) + key


def m_multi(op, items, tgt=42):
    body = b""
    for it in items:
        table, key = it[0], it[1]
        if op == OP["MULTI_WRITE"]:
            value = it[2]
            body += struct.pack("<Q", table) + rules() + struct.pack("<IHH", len(value), len(key), 0) + key + value
        else:
            body += struct.pack("<Q", table) + rules() + struct.pack("<H6x", len(key)) + key
    return hdr(op, SVC_MASTER) + struct.pack("<Q", tgt) + rpcid() + struct.pack("<II", len(items), 0) + body


def m_enum(table, start=0, end=2**64 - 1, cursor=0, max_bytes=0, tgt=42):
    return hdr(OP["ENUMERATE"], SVC_MASTER) + struct.pack("<QQQQQII", tgt, table, start, end, cursor, max_bytes, 0)


# ---- protobuf (proto/cram.proto) -------------------------------------------
def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def pf_int(field, v):
    return varint(field << 3) + varint(v) if v else b""


def pf_bytes(field, b):
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_tablet(table, s, e, server=0, state=0):
    return pf_int(1, table) + pf_int(2, s) + pf_int(3, e) + pf_int(4, server) + pf_int(5, state)


def pb_server_entry(sid, locs, services=3, status=0, domain=b""):
    out = pf_int(1, sid)
    for l in locs:
        out += pf_bytes(2, l)
    out += pf_int(3, services) + pf_int(4, status)
    if domain:
        out += pf_bytes(5, domain)
    return out


def field_numbers(msg):
    """Field numbers of a message in proto/cram.proto (so seeds follow the schema)."""
    text = open(os.path.join(HERE, "..", "..", "proto", "cram.proto")).read()
    start = text.index("message %s {" % msg)
    body = text[start:text.index("\n}", start)]
    out = {}
    for line in body.splitlines()[1:]:
        line = line.split("//")[0].strip().rstrip(";")
        if "=" in line:
            lhs, num = line.split("=")
            out[lhs.split()[-1]] = int(num)
    return out


def pb_server_list(version, entries, full):
    f = field_numbers("ServerList")
    out = pf_int(f["version"], version)
    for e in entries:
        out += pf_bytes(f["servers"], e)
    return out + pf_int(f["full"], 1 if full else 0)


# ---- common/segment.h --------------------------------------------------------
def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_T = _crc_table()


def crc32c(crc, data):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(0, b"123456789") == 0xE3069283


class Segment:
    def __init__(self, master_id, segment_id, capacity=65536, epoch=1):
        self.buf = b""
        self.cert = 0
        self.entry(1, struct.pack("<IHHQQQII", 0x4D415243, 1, 0, master_id, segment_id, epoch, capacity, 0))

    def entry(self, typ, body):
        h = struct.pack("<BBHII", typ, 0, 0, len(body), 0)
        crc = crc32c(crc32c(0, h), body)
        h = struct.pack("<BBHII", typ, 0, 0, len(body), crc)
        self.cert = crc32c(self.cert, h)
        self.buf += h + body

    def obj(self, table, key, value, version=1):
        self.entry(2, struct.pack("<QQIHH", table, version, 1000, len(key), 0) + key + value)

    def tomb(self, table, key, version=1, seg=1):
        self.entry(3, struct.pack("<QQQIHH", table, version, seg, 1000, len(key), 0) + key)

    def safe_version(self, v):
        self.entry(4, struct.pack("<Q", v))

    def digest(self, ids):
        self.entry(5, struct.pack("<II", len(ids), 0) + b"".join(struct.pack("<Q", i) for i in ids))

    def certificate(self):
        n = len(self.buf)
        return n, crc32c(self.cert, struct.pack("<I", n))


def bk_write(master, seg, epoch, off, data, flags, capacity, cert, tgt=77):
    return hdr(OP["BK_WRITE"], SVC_BACKUP) + struct.pack("<QQQQIIIIII", tgt, master, seg, epoch, off, len(data),
                                                         capacity, flags, cert[0], cert[1]) + data


def bk_free(master, seg, tgt=77):
    return hdr(OP["BK_FREE"], SVC_BACKUP) + struct.pack("<QQQ", tgt, master, seg)


def bk_list(master, tgt=77):
    return hdr(OP["BK_LIST"], SVC_BACKUP) + struct.pack("<QQ", tgt, master)


def bk_read(master, seg, epoch=0, off=0, max_bytes=0, tgt=77):
    return hdr(OP["BK_READ"], SVC_BACKUP) + struct.pack("<QQQQII", tgt, master, seg, epoch, off, max_bytes)


def bk_rdata(master, seg, ranges, epoch=0, off=0, max_bytes=0, tgt=77):
    return hdr(OP["BK_RDATA"], SVC_BACKUP) + struct.pack("<QQQQIIII", tgt, master, seg, epoch, off, max_bytes,
                                                         len(ranges), 0) + \
        b"".join(struct.pack("<QQQ", *r) for r in ranges)


# ---- xdp_proto.h ---------------------------------------------------------------
def xp_pkt(typ, payload=b"", frag=0, nfrags=1, msg_len=None, fs=256, cnonce=0xabcdef, snonce=0x2222,
           rid=3, aux=1, flags=0):
    if msg_len is None:
        msg_len = len(payload)
    return struct.pack("<HBBBBHIIIHHQQQQ", 0xC7A5, 1, typ, flags, 0, len(payload), frag, nfrags, msg_len, fs, 0,
                       cnonce, snonce, rid, aux) + payload


# ---------------------------------------------------------------------------------
def seeds():
    s = {}
    # master request parsers: one message each
    s["master_wire"] = {
        "read": m_read(1, b"alpha"),
        "write": m_write(1, b"alpha", b"value"),
        "write_rules": m_write(1, b"k", b"v", r=rules(5, 0, 1, 1, 0)),
        "remove": m_remove(1, b"beta"),
        "incr": m_incr(1, b"counter", -3),
        "multi_read": m_multi(OP["MULTI_READ"], [(1, b"a"), (2, b"bb")]),
        "multi_write": m_multi(OP["MULTI_WRITE"], [(1, b"a", b"x"), (1, b"b", b"y" * 40)]),
        "multi_remove": m_multi(OP["MULTI_REMOVE"], [(1, b"a")]),
        "enum": m_enum(1, max_bytes=4096),
        "truncated_write": m_write(1, b"alpha", b"value")[:-2],
    }
    ms = s["master_wire"]
    take = hdr(OP["TAKE_TABLET"], SVC_MASTER) + pf_bytes(1, pb_tablet(3, 0, 2**64 - 1))
    drop = hdr(OP["DROP_TABLET"], SVC_MASTER) + pf_bytes(1, pb_tablet(3, 0, 2**64 - 1))
    slu = hdr(OP["SERVER_LIST_UPDATE"], SVC_MASTER) + pb_server_list(
        5, [pb_server_entry(7, [b"tcp:host=127.0.0.1,port=1"])], True)
    recover = hdr(OP["RECOVER"], SVC_MASTER) + pf_int(1, 1) + pf_int(2, 500) + \
        pf_bytes(4, pb_tablet(5, 0, 2**64 - 1)) + \
        pf_bytes(5, pf_int(1, 1) + pf_int(2, 1) + pf_int(3, 9) + pf_bytes(4, b"tcp:host=127.0.0.1,port=1") +
                 pf_int(5, 100) + pf_int(6, 1))
    s["master"] = {
        "recover": SEP.join([recover, m_read(5, b"k")]),
        "kv": SEP.join([ms["write"], ms["read"], ms["incr"], m_incr(1, b"counter", 2), ms["remove"], ms["read"]]),
        "multi": SEP.join([ms["multi_write"], ms["multi_read"], ms["multi_remove"]]),
        "enum": SEP.join([m_write(2, b"e1", b"v"), m_enum(1), m_enum(2, 0, 2**63 - 1, 0, 64)]),
        "tablets": SEP.join([take, m_write(3, b"k", b"v"), drop, m_read(3, b"k")]),
        "stats": hdr(OP["GET_SERVER_STATS"], SVC_MASTER),
        "server_list": slu,
        "ping": hdr(OP["PING"], SVC_MASTER),
        "wrong_server": m_read(1, b"alpha", tgt=9),
        "short": b"\x1e\x00",
    }
    seg = Segment(500, 1)
    seg.digest([1])
    seg.safe_version(3)
    seg.obj(1, b"alpha", b"one")
    seg.obj(2, b"beta", b"two" * 10, version=2)
    seg.tomb(1, b"gone", 1)
    cert = seg.certificate()
    data = seg.buf
    half = len(data) // 2
    cert_half = (0, 0)
    s["backup"] = {
        "open_write_close": SEP.join([
            bk_write(500, 1, 1, 0, data[:half], 1, 65536, cert_half),
            bk_write(500, 1, 1, half, data[half:], 2, 65536, cert),
            bk_list(500), bk_list(0), bk_read(500, 1), bk_read(500, 1, 0, 12, 20),
            bk_rdata(500, 1, [(1, 0, 2**64 - 1), (2, 0, 2**63)]),
            bk_rdata(500, 1, [(1, 0, 2**64 - 1)], off=len(data) // 3),
            bk_free(500, 1), bk_read(500, 1)]),
        "open_sync": SEP.join([bk_write(501, 2, 1, 0, data, 1 | 4, 65536, cert),
                               bk_rdata(501, 2, [(2, 0, 2**64 - 1)], max_bytes=64), bk_free(501, 2)]),
        "stale_epoch": SEP.join([bk_write(502, 3, 2, 0, data, 1, 65536, cert),
                                 bk_write(502, 3, 1, 0, data, 0, 65536, cert)]),
        "bad": SEP.join([bk_write(503, 1, 1, 10, b"", 1, 0, (0, 0)), bk_rdata(1, 1, []), bk_read(9, 9)]),
    }
    s["segment"] = {
        "valid_fix_cert": b"\x03" + data,
        "valid_own_cert": b"\x00" + data + struct.pack("<II", *cert),
        "fix_truncate": b"\x07" + data,
        "garbage": b"\x01" + b"\x02\x00\x00\x00\x40\x00\x00\x00" + b"\x00" * 20,
    }
    f_en = field_numbers("EnlistServerRequest")
    s["coord_proto"] = {
        "enlist": b"\x00" + pf_bytes(f_en["locators"], b"tcp:host=127.0.0.1,port=5000") +
        pf_int(f_en["services"], 3) + pf_bytes(f_en["failure_domain"], b"rack1"),
        "create_table": b"\x01" + pf_bytes(1, b"table") + pf_int(2, 4),
        "table_name": b"\x02" + pf_bytes(1, b"t"),
        "table_config": b"\x03" + pf_int(1, 5),
        "server_id": b"\x04" + pf_int(1, 5),
        "rmf": b"\x06" + pf_int(1, 1) + pf_int(2, 0) + pf_int(3, 8) + pf_int(4, 1),
        "server_list": b"\x0b" + pb_server_list(3, [pb_server_entry(1, [b"tcp:host=a,port=1"], domain=b"d")], True),
        "recover": b"\x09" + pf_int(1, 1) + pf_int(2, 2) + pf_bytes(4, pb_tablet(1, 0, 100)),
    }
    e1 = pb_server_entry(1 << 32 | 1, [b"tcp:host=127.0.0.1,port=4000", b"xdp:if=veth0,ip=10.0.0.1,port=1"])
    e2 = pb_server_entry(2, [b"tcp:host=127.0.0.1,port=4001"], services=2, domain=b"rack-b")
    e2c = pb_server_entry(2, [b"tcp:host=127.0.0.1,port=4001"], services=2, status=1)
    s["serverlist"] = {
        "full": pb_server_list(1, [e1, e2], True),
        "full_then_partial": SEP.join([pb_server_list(1, [e1, e2], True), pb_server_list(2, [e2c], False),
                                       pb_server_list(2, [e1], False)]),
        "long_locator": pb_server_list(1, [pb_server_entry(3, [b"tcp:host=" + b"h" * 600 + b",port=1"])], True),
    }

    def frame(body, rid, resp):
        return struct.pack("<IIQ", len(body), 1 if resp else 0, rid) + body
    s["tcp"] = {
        "server_two": b"\x00" + frame(b"ab", 1, False) + frame(b"odd", 2, False),
        "server_partial": b"\x00" + frame(b"x" * 100, 5, False)[:60],
        "server_bad_flags": b"\x00" + struct.pack("<IIQ", 4, 6, 1) + b"abcd",
        "server_big": b"\x00" + frame(b"y" * 5000, 9, False) + frame(b"", 10, False),
        "client_answers": b"\x01" + frame(b"r1", 1 << 32 | 1, True) + frame(b"r3", 1 << 32 | 3, True) +
        frame(b"", 1 << 32 | 2, True),
        "client_unknown_id": b"\x01" + frame(b"zz", 77, True),
        "client_request_wrong_way": b"\x01" + frame(b"q", 1, False),
    }
    req = xp_pkt(1, b"hello", rid=3, snonce=0, flags=1)
    s["xdp_proto"] = {
        "settle": SEP.join([b"\x0e" + b"", b"\x0f" + b"", b"\x0e", b"\x0f", b"\x0e", b"\x0f"]),
        "request_to_server": SEP.join([b"\x00" + req, b"\x0f", b"\x0e"]),
        "two_frag": SEP.join([b"\x00" + xp_pkt(1, b"a" * 256, 0, 2, 300, rid=4),
                              b"\x00" + xp_pkt(1, b"b" * 44, 1, 2, 300, rid=4)]),
        "ack_to_client": SEP.join([b"\x0e", b"\x01" + xp_pkt(3, b"", frag=1, rid=1, aux=0, snonce=0x2222)]),
        "resp_to_client": SEP.join([b"\x0e", b"\x01" + xp_pkt(2, b"request!", rid=1, snonce=0x2222)]),
        "reset": b"\x01" + xp_pkt(5, b"", rid=1, snonce=0x9999),
        "timeouts": SEP.join([b"\xf0", b"\xf1", b"\xf0"]),
    }
    s["locator"] = {
        "tcp": b"tcp:host=127.0.0.1,port=4000",
        "tcp_any": b"tcp:port=0,host=localhost",
        "zk": b"zk:127.0.0.1:2181,127.0.0.2:2182",
        "multi": b"xdp:if=veth0,ip=10.0.0.1,port=9;tcp:host=h,port=1;rdma:host=1.2.3.4,port=5",
        "bad": b"tcp:host=,port=70000,x=y",
    }

    def resp(status, rest=b""):
        return struct.pack("<i", status) + rest
    s["client_parse"] = {
        "status": b"\x00\x00\x00" + resp(0),
        "read": b"\x01\x00\x00" + resp(0, struct.pack("<IQ", 3, 7)) + b"abc",
        "read_err": b"\x01\x00\x00" + resp(5),
        "write": b"\x02\x00\x00" + resp(0, struct.pack("<IQ", 0, 9)),
        "incr": b"\x03\x00\x00" + resp(0, struct.pack("<IQq", 0, 9, -4)),
        "multi_read": b"\x04\x02\x00" + resp(0, struct.pack("<I", 2)) + struct.pack("<iIQ", 0, 2, 1) + b"hi" +
        struct.pack("<iIQ", 5, 0, 0),
        "multi_write": b"\x05\x01\x00" + resp(0, struct.pack("<I", 1)) + struct.pack("<iIQ", 0, 0, 3),
        "enum": b"\x06\x00\x00" + resp(0, struct.pack("<IQB7x", 2, 99, 0)) + struct.pack("<QIHH", 1, 2, 1, 0) +
        b"kvv" + struct.pack("<QIHH", 2, 0, 2, 0) + b"kk",
    }
    return s


def main():
    root = os.path.join(HERE, "corpus")
    for target, files in seeds().items():
        d = os.path.join(root, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    print("wrote", sum(len(v) for v in seeds().values()), "seeds under", root)


if __name__ == "__main__":
    main()
