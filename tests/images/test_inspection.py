"""The header inspector against a hostile corpus: images made by the real qemu-img, then a few bytes
edited to make them lie. Every verdict is asserted: format, safe, virtual size, the words the user reads.

No database: the management command is driven through `call_command` with the JSON on stdout.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from images import inspection
from images.inspection import FORMATS, QEMU_FORMAT, Verdict, inspect

MiB = 2**20
SIZE = 16 * MiB


def qemu_img(*args: str | Path) -> None:
    subprocess.run(["qemu-img", *map(str, args)], check=True, capture_output=True)


def qemu_virtual_size(path: Path, fmt: str) -> int:
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", QEMU_FORMAT[fmt], str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout)["virtual-size"]


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


def copy(corpus: Path, source: str, target: str) -> Path:
    shutil.copyfile(corpus / source, corpus / target)
    return corpus / target


def edit_vmdk_descriptor(path: Path, old: str, new: str) -> None:
    """Rewrite the descriptor embedded in a sparse VMDK in place, inside its reserved sectors."""
    with open(path, "r+b") as file:
        header = file.read(512)
        offset, sectors = struct.unpack("<QQ", header[28:44])
        file.seek(offset * 512)
        text = file.read(sectors * 512).split(b"\0", 1)[0].decode()
        assert old in text
        edited = text.replace(old, new).encode()
        assert len(edited) <= sectors * 512
        file.seek(offset * 512)
        file.write(edited.ljust(sectors * 512, b"\0"))


def vmdk_descriptor(path: Path) -> str:
    header = path.read_bytes()[:512]
    offset, sectors = struct.unpack("<QQ", header[28:44])
    return path.read_bytes()[offset * 512 : (offset + sectors) * 512].split(b"\0", 1)[0].decode()


def write_vmdk_descriptor(path: Path, text: str | bytes, sector: int = 1) -> None:
    """Write descriptor text at `sector` of a sparse VMDK made by qemu-img (20 sectors kept from sector 1)."""
    raw = text.encode() if isinstance(text, str) else text
    assert sector * 512 + len(raw) <= 21 * 512
    patch(path, sector * 512, raw.ljust(min(20 * 512, 21 * 512 - sector * 512), b"\0"))


def rewrite_vhdx_structure(path: Path, offset: int, size: int, edit) -> None:
    """Edit a VHDX header or region table and store its CRC-32C again, so only the edit is wrong."""
    with open(path, "r+b") as file:
        file.seek(offset)
        structure = bytearray(file.read(size))
        edit(structure)
        structure[4:8] = bytes(4)
        structure[4:8] = struct.pack("<I", inspection.crc32c(bytes(structure)))
        file.seek(offset)
        file.write(structure)


def iso_bytes(size: int = MiB) -> bytearray:
    """An ISO 9660 image without genisoimage: a primary volume descriptor and the set terminator."""
    data = bytearray(size)
    data[0x8000:0x8007] = b"\x01CD001\x01"
    data[0x8000 + 80 : 0x8000 + 88] = struct.pack("<I", size // 2048) + struct.pack(">I", size // 2048)
    data[0x8800:0x8807] = b"\xffCD001\x01"
    return data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    data = root / "data.raw"
    data.write_bytes(bytes(range(256)) * (4 * MiB // 256))  # content for the converted images
    qemu_img("create", "-q", "-f", "qcow2", root / "plain.qcow2", "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", root / "v2.qcow2", "16M")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", data, root / "data.qcow2")
    qemu_img("create", "-q", "-f", "raw", root / "plain.raw", "16M")
    qemu_img("create", "-q", "-f", "raw", root / "base.raw", "16M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", root / "base.raw", "-F", "raw", root / "backed.qcow2")
    qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        f"data_file={root / 'external.raw'}",
        root / "datafile.qcow2",
        "16M",
    )
    qemu_img(
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicSparse",
        root / "monolithic-sparse.vmdk",
        "16M",
    )
    qemu_img(
        "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", data, root / "stream.vmdk"
    )
    qemu_img("create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", root / "flat.vmdk", "16M")
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", root / "fixed.vhd", "16M")
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic", root / "dynamic.vhd", "16M")
    qemu_img("create", "-q", "-f", "vhdx", root / "plain.vhdx", "16M")
    qemu_img("create", "-q", "-f", "qed", root / "plain.qed", "16M")
    qemu_img("snapshot", "-c", "first", root / "data.qcow2")
    (root / "plain.iso").write_bytes(iso_bytes())
    return root


def assert_refused(verdict: Verdict, fmt: str | None, *words: str) -> None:
    assert verdict.safe is False, verdict
    assert verdict.format == fmt, verdict
    for word in words:
        assert word in verdict.reason, verdict


# What is accepted -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("plain.qcow2", "qcow2"),
        ("v2.qcow2", "qcow2"),
        ("data.qcow2", "qcow2"),  # with an internal snapshot
        ("plain.raw", "raw"),
        ("monolithic-sparse.vmdk", "vmdk"),
        ("stream.vmdk", "vmdk"),
        ("fixed.vhd", "vhd"),
        ("dynamic.vhd", "vhd"),
        ("plain.vhdx", "vhdx"),
    ],
)
def test_images_made_by_qemu_img_are_accepted_with_qemus_virtual_size(corpus, name, fmt):
    verdict = inspect(corpus / name)
    assert verdict == Verdict(fmt, qemu_virtual_size(corpus / name, fmt), True, "")
    assert inspect(corpus / name, declared_format=fmt).safe is True


def test_fixed_vhd_size_is_its_current_size_not_the_file_size(corpus):
    verdict = inspect(corpus / "fixed.vhd")
    assert verdict.virtual_size == (corpus / "fixed.vhd").stat().st_size - 512


def test_minimal_iso_is_accepted_with_its_file_size(corpus):
    assert inspect(corpus / "plain.iso", declared_format="iso") == Verdict("iso", MiB, True, "")


def test_verdict_as_dict_has_the_four_fields(corpus):
    assert inspect(corpus / "plain.raw").as_dict() == {
        "format": "raw",
        "virtual_size": SIZE,
        "safe": True,
        "reason": "",
    }


def test_qemu_format_covers_every_accepted_format():
    assert set(QEMU_FORMAT) == set(FORMATS)
    assert QEMU_FORMAT["vhd"] == "vpc" and QEMU_FORMAT["iso"] == "raw"


# Declared format against content ------------------------------------------------------------------------


def test_vmdk_declared_as_qcow2_is_refused_with_the_spec_text(corpus):
    vmdk_named_qcow2 = copy(corpus, "monolithic-sparse.vmdk", "disguised.qcow2")
    verdict = inspect(vmdk_named_qcow2, declared_format="qcow2")
    assert verdict == Verdict("vmdk", None, False, "format 'qcow2' but file has VMDK signature")


def test_fixed_vhd_declared_raw_is_refused(corpus):
    # qemu-img would probe this file as raw; the footer says otherwise.
    verdict = inspect(corpus / "fixed.vhd", declared_format="raw")
    assert verdict.reason == "format 'raw' but file has VHD signature"


def test_raw_starting_with_a_qcow2_header_declared_raw_is_refused(corpus):
    raw = corpus / "qcow2-header.raw"
    raw.write_bytes((corpus / "backed.qcow2").read_bytes()[:4096].ljust(MiB, b"\0"))
    verdict = inspect(raw, declared_format="raw")
    assert verdict == Verdict("qcow2", None, False, "format 'raw' but file has QCOW2 signature")


def test_plain_raw_declared_qcow2_is_refused_naming_raw(corpus):
    assert (
        inspect(corpus / "plain.raw", declared_format="qcow2").reason
        == "format 'qcow2' but file has RAW signature"
    )


def test_iso_declared_raw_is_refused_naming_iso(corpus):
    assert (
        inspect(corpus / "plain.iso", declared_format="raw").reason
        == "format 'raw' but file has ISO signature"
    )


def test_unknown_declared_format_is_refused_naming_the_accepted_ones(corpus):
    verdict = inspect(corpus / "plain.raw", declared_format="vdi")
    assert_refused(verdict, None, "'vdi'", "qcow2, raw, vmdk, vhd, vhdx, iso")


# qcow2 ------------------------------------------------------------------------------------------------


def test_qcow2_with_backing_file_is_refused_naming_it(corpus):
    verdict = inspect(corpus / "backed.qcow2", declared_format="qcow2")
    assert_refused(verdict, "qcow2", "backing file", "base.raw'", "qemu-img convert -O qcow2")
    assert verdict.virtual_size == SIZE


def test_qcow2_with_external_data_file_is_refused(corpus):
    assert_refused(inspect(corpus / "datafile.qcow2"), "qcow2", "external data file", "external.raw")


def test_qcow2_with_only_the_data_file_feature_bit_is_refused(corpus):
    path = copy(corpus, "plain.qcow2", "data-bit.qcow2")
    patch(path, 72, struct.pack(">Q", 1 << 2))
    assert_refused(inspect(path), "qcow2", "external data file")


def test_qcow2_with_unknown_incompatible_feature_is_refused(corpus):
    path = copy(corpus, "plain.qcow2", "unknown-feature.qcow2")
    patch(path, 72, struct.pack(">Q", 1 << 40))
    assert_refused(inspect(path), "qcow2", "unknown incompatible features", "0x10000000000")


def test_encrypted_qcow2_is_refused(corpus):
    path = copy(corpus, "plain.qcow2", "encrypted.qcow2")
    patch(path, 32, struct.pack(">I", 2))
    assert_refused(inspect(path), "qcow2", "encrypted", "not supported")


@pytest.mark.parametrize("cluster_bits", [8, 22, 31])
def test_qcow2_with_cluster_bits_outside_9_to_21_is_refused(corpus, cluster_bits):
    path = copy(corpus, "plain.qcow2", f"cluster-{cluster_bits}.qcow2")
    patch(path, 20, struct.pack(">I", cluster_bits))
    assert_refused(inspect(path), "qcow2", f"cluster_bits {cluster_bits}")


def test_qcow2_whose_l1_table_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "plain.qcow2", "l1-past-eof.qcow2")
    patch(path, 40, struct.pack(">Q", 64 * MiB))
    assert_refused(inspect(path), "qcow2", "L1 table lies outside the file", "upload the complete image")


def test_qcow2_whose_refcount_table_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "plain.qcow2", "refcount-past-eof.qcow2")
    patch(path, 56, struct.pack(">I", 1000))  # refcount_table_clusters
    assert_refused(inspect(path), "qcow2", "refcount table lies outside the file")


def test_qcow2_whose_snapshot_l1_table_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "data.qcow2", "snapshot-past-eof.qcow2")
    snapshots_offset = struct.unpack(">Q", path.read_bytes()[64:72])[0]
    patch(path, snapshots_offset, struct.pack(">Q", 2**40))
    assert_refused(inspect(path), "qcow2", "internal snapshot lies outside the file")


def test_truncated_qcow2_is_refused(corpus):
    path = copy(corpus, "data.qcow2", "truncated.qcow2")
    with open(path, "r+b") as file:
        file.truncate(100_000)
    assert_refused(inspect(path), "qcow2", "outside the file")


def test_qcow2_cut_inside_its_header_is_refused(corpus):
    path = corpus / "cut.qcow2"
    path.write_bytes((corpus / "plain.qcow2").read_bytes()[:50])
    assert_refused(inspect(path), "qcow2", "(50 bytes) ends inside its qcow2 header")


def test_qcow2_with_a_vhd_footer_appended_is_refused_as_two_disks(corpus):
    path = corpus / "qcow2-with-footer.qcow2"
    path.write_bytes((corpus / "plain.qcow2").read_bytes() + (corpus / "fixed.vhd").read_bytes()[-512:])
    assert_refused(inspect(path), "qcow2", "VHD footer at the end of a QCOW2 image")


# ISO polyglots -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("plain.qcow2", "QCOW2"),
        ("monolithic-sparse.vmdk", "VMDK"),
        ("plain.vhdx", "VHDX"),
        ("plain.qed", "QED"),
    ],
)
def test_iso_carrying_another_format_header_is_refused(corpus, source, name):
    data = iso_bytes()
    data[:512] = (corpus / source).read_bytes()[:512]
    path = corpus / f"{source}.iso"
    path.write_bytes(data)
    verdict = inspect(path, declared_format="iso")
    assert_refused(verdict, "iso", f"carries a {name} header inside an ISO")


# VMDK -------------------------------------------------------------------------------------------------


def test_vmdk_descriptor_file_is_refused_because_its_extents_are_other_files(corpus):
    verdict = inspect(corpus / "flat.vmdk", declared_format="vmdk")
    assert_refused(verdict, "vmdk", "monolithicFlat", "'flat-flat.vmdk'", "outside the file")
    assert verdict.virtual_size == SIZE


def test_text_starting_with_version_line_is_a_vmdk_descriptor(corpus):
    path = corpus / "version-line.img"
    path.write_bytes(b'# comment\nversion=1\nRW 2048 FLAT "/dev/sda" 0\n'.ljust(4096, b"\n"))
    assert_refused(inspect(path), "vmdk", "'/dev/sda'", "outside the file")


def test_sparse_vmdk_whose_descriptor_names_another_file_is_refused(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "names-passwd.vmdk")
    edit_vmdk_descriptor(path, 'SPARSE "monolithic-sparse.vmdk"', 'FLAT "/etc/passwd" 0')
    assert_refused(inspect(path), "vmdk", "names another file", "FLAT '/etc/passwd'")


def test_sparse_vmdk_with_two_extents_is_refused(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "two-extents.vmdk")
    edit_vmdk_descriptor(
        path,
        'RW 32768 SPARSE "monolithic-sparse.vmdk"',
        'RW 16384 SPARSE "monolithic-sparse.vmdk"\nRW 16384 SPARSE "other.vmdk"',
    )
    assert_refused(inspect(path), "vmdk", "names another file", "'other.vmdk'")


def test_sparse_vmdk_with_a_parent_is_refused(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "child.vmdk")
    edit_vmdk_descriptor(path, "parentCID=ffffffff", 'parentCID=12345678\nparentFileNameHint="base.vmdk"')
    assert_refused(inspect(path), "vmdk", "parent (backing file) 'base.vmdk'")


def test_sparse_vmdk_with_another_create_type_is_refused(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "vmfs.vmdk")
    edit_vmdk_descriptor(path, 'createType="monolithicSparse"', 'createType="vmfsSparse"')
    assert_refused(inspect(path), "vmdk", "createType 'vmfsSparse'")


def test_sparse_vmdk_with_capacity_zero_is_refused(corpus):
    # With capacity 0 qemu opens the embedded descriptor as a descriptor file, extents and all.
    path = copy(corpus, "monolithic-sparse.vmdk", "capacity-zero.vmdk")
    patch(path, 12, struct.pack("<Q", 0))
    assert_refused(inspect(path), "vmdk", "capacity 0")


def test_sparse_vmdk_whose_grain_directory_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "gd-past-eof.vmdk")
    patch(path, 56, struct.pack("<Q", 10**9))
    assert_refused(inspect(path), "vmdk", "grain directory lies outside the file")


def test_sparse_vmdk_whose_descriptor_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "descriptor-past-eof.vmdk")
    patch(path, 36, struct.pack("<Q", 2000))
    assert_refused(inspect(path), "vmdk", "embedded descriptor lies outside the file")


def _stream_with_footer(corpus: Path, name: str, edit_footer=None, marker_type: int = 3) -> Path:
    """A streamOptimized VMDK whose header says "grain directory at the end" and whose footer holds it:
    footer marker, footer, end-of-stream marker, as VMware writes them."""
    path = copy(corpus, "stream.vmdk", name)
    data = bytearray(path.read_bytes())
    footer = bytearray(data[:512])
    if edit_footer is not None:
        edit_footer(footer)
    data[56:64] = struct.pack("<Q", 0xFFFFFFFFFFFFFFFF)
    marker = struct.pack("<QII", 1, 0, marker_type).ljust(512, b"\0")
    path.write_bytes(bytes(data) + marker + bytes(footer) + bytes(512))
    return path


def test_stream_vmdk_with_grain_directory_at_the_end_is_read_from_its_footer(corpus):
    path = _stream_with_footer(corpus, "gd-at-end.vmdk")
    assert inspect(path) == Verdict("vmdk", 4 * MiB, True, "")
    assert qemu_virtual_size(path, "vmdk") == 4 * MiB


def test_stream_vmdk_whose_footer_grain_directory_points_past_the_end_is_refused(corpus):
    path = _stream_with_footer(
        corpus, "gd-at-end-outside.vmdk", lambda f: f.__setitem__(slice(56, 64), struct.pack("<Q", 10**9))
    )
    assert_refused(inspect(path), "vmdk", "grain directory lies outside the file")


@pytest.mark.parametrize(
    ("name", "edit_footer", "marker_type", "words"),
    [
        # qemu takes the whole header from the footer: a bigger disk than the header says.
        (
            "footer-bigger.vmdk",
            lambda f: f.__setitem__(slice(12, 20), struct.pack("<Q", 2**31)),
            3,
            "another disk",
        ),
        (
            "footer-descriptor.vmdk",
            lambda f: f.__setitem__(slice(28, 36), struct.pack("<Q", 5)),
            3,
            "another disk",
        ),
        (
            "footer-grain.vmdk",
            lambda f: f.__setitem__(slice(20, 28), struct.pack("<Q", 256)),
            3,
            "another disk",
        ),
        (
            "footer-again.vmdk",
            lambda f: f.__setitem__(slice(56, 64), struct.pack("<Q", 2**64 - 1)),
            3,
            "another footer",
        ),
        ("footer-no-marker.vmdk", None, 0, "ends without its footer"),
    ],
)
def test_stream_vmdk_whose_footer_disagrees_or_is_malformed_is_refused(
    corpus, name, edit_footer, marker_type, words
):
    path = _stream_with_footer(corpus, name, edit_footer, marker_type)
    assert_refused(inspect(path), "vmdk", words)


def test_vmdk_whose_size_is_not_whole_sectors_is_refused(corpus):
    # qemu finds a footer from the size rounded up to a sector, so it would read other bytes than these.
    path = _stream_with_footer(corpus, "unaligned.vmdk")
    path.write_bytes(path.read_bytes() + b"\0" * 100)
    assert_refused(inspect(path), "vmdk", "not a whole number of 512-byte sectors")


def test_sparse_vmdk_whose_descriptor_is_not_at_sector_1_is_refused(corpus):
    """qemu reads the descriptor text of a sparse file at sector 1 whatever the header says: a clean
    descriptor elsewhere with a parent named at sector 1 opens that host file as a backing disk."""
    path = copy(corpus, "monolithic-sparse.vmdk", "descriptor-moved.vmdk")
    clean = vmdk_descriptor(path)
    write_vmdk_descriptor(
        path,
        clean.replace(
            "parentCID=ffffffff", f'parentCID=12345678\nparentFileNameHint="{corpus / "stream.vmdk"}"'
        ),
    )
    patch(path, 10 * 512, clean.encode().ljust(11 * 512, b"\0"))
    patch(path, 28, struct.pack("<QQ", 10, 11))
    info = subprocess.run(["qemu-img", "info", "-f", "vmdk", str(path)], capture_output=True, text=True)
    assert "backing file" in info.stdout  # what qemu would have opened
    assert_refused(inspect(path), "vmdk", "at sector 10", "sector 1")


HOSTILE_DESCRIPTORS = [
    # (name, old, new, words): one edit of the descriptor qemu-img wrote; each is refused.
    (
        "parent-in-comment",
        "# Extent description",
        '# parentFileNameHint="/etc/passwd"',
        ["parent (backing file) '/etc/passwd'"],
    ),
    (
        "parent-in-ddb",
        'ddb.adapterType = "ide"',
        'ddb.parentFileNameHint = "/etc/passwd"',
        ["parent (backing file) '/etc/passwd'"],
    ),
    (
        "parent-lower-case",
        "parentCID=ffffffff",
        'parentCID=ffffffff\nparentfilenamehint="base.vmdk"',
        ["parent (backing file) 'base.vmdk'"],
    ),
    (
        "parent-cid-only",
        "parentCID=ffffffff",
        "parentCID=12345678",
        ["differencing disk (parentCID 12345678)"],
    ),
    ("parent-cid-in-comment", "# Extent description", "# parentCID=12345678", ["differencing disk"]),
    (
        "create-type-unquoted",
        'createType="monolithicSparse"',
        "createType=monolithicSparse",
        ["createType 'monolithicSparse' is not accepted"],
    ),
    (
        "create-type-single-quotes",
        'createType="monolithicSparse"',
        "createType='monolithicFlat'",
        ["createType ''monolithicFlat'' is not accepted"],
    ),
    (
        "create-type-spaced",
        'createType="monolithicSparse"',
        'createType = "monolithicFlat"',
        ["createType 'monolithicFlat'"],
    ),
    ("create-type-twice", "# Extent description", '# createType="monolithicFlat"', ["written once"]),
    (
        "create-type-lower-case",
        'createType="monolithicSparse"',
        'createtype="monolithicsparse"',
        ["createType 'monolithicsparse'"],
    ),
    (
        "extent-with-path",
        '"monolithic-sparse.vmdk"',
        '"/etc/passwd"',
        ["names another file", "SPARSE '/etc/passwd'"],
    ),
    (
        "extent-up-a-folder",
        '"monolithic-sparse.vmdk"',
        '"../other.vmdk"',
        ["names another file", "'../other.vmdk'"],
    ),
    (
        "extent-vmfs",
        'SPARSE "monolithic-sparse.vmdk"',
        'VMFS "disk-flat.vmdk"',
        ["names another file", "VMFS 'disk-flat.vmdk'"],
    ),
    (
        "extent-sparse-with-offset",
        'SPARSE "monolithic-sparse.vmdk"',
        'SPARSE "monolithic-sparse.vmdk" 0',
        ["names another file"],
    ),
    (
        "extent-lower-case",
        "# The Disk Data Base",
        'rw 32768 flat "/etc/passwd" 0',
        ["'rw 32768 flat \"/etc/passwd\" 0' is neither"],
    ),
    (
        "extent-signed-size",
        "# The Disk Data Base",
        'RW +32768 FLAT "/etc/passwd" 0',
        ["neither a setting nor an extent"],
    ),
    (
        "extent-glued",
        "# The Disk Data Base",
        'RW 32768FLAT "/etc/passwd" 0',
        ["neither a setting nor an extent"],
    ),
    ("extent-zero", "# The Disk Data Base", "RW 32768 ZERO", ["neither a setting nor an extent"]),
    ("extent-other-size", "RW 32768 SPARSE", "RW 65536 SPARSE", ["65536 sectors but its header 32768"]),
    ("no-extent", 'RW 32768 SPARSE "monolithic-sparse.vmdk"', "", ["no extent"]),
    ("unknown-line", "# The Disk Data Base", "include /etc/passwd", ["'include /etc/passwd' is neither"]),
    (
        "vertical-tab",
        'createType="monolithicSparse"',
        'createType="monolithicSparse"\vRW 1 FLAT "/etc/passwd" 0',
        ["not plain ASCII text"],
    ),
    ("not-ascii", "# Extent description", "# Extent description \u00e9", ["not plain ASCII text"]),
    ("key-twice", "CID=", "CID=00000001\nCID=", ["sets CID more than once"]),
]


@pytest.mark.parametrize(
    ("name", "old", "new", "words"), HOSTILE_DESCRIPTORS, ids=[case[0] for case in HOSTILE_DESCRIPTORS]
)
def test_sparse_vmdk_with_a_hostile_descriptor_is_refused(corpus, name, old, new, words):
    path = copy(corpus, "monolithic-sparse.vmdk", f"{name}.vmdk")
    text = vmdk_descriptor(path)
    assert old in text
    write_vmdk_descriptor(path, text.replace(old, new, 1).encode("utf-8"))
    assert_refused(inspect(path), "vmdk", *words)


def test_sparse_vmdk_descriptor_with_windows_line_ends_and_indents_is_accepted(corpus):
    path = copy(corpus, "monolithic-sparse.vmdk", "crlf.vmdk")
    text = vmdk_descriptor(path).replace("RW ", "  RW\t").replace("\n", "\r\n")
    write_vmdk_descriptor(path, text)
    assert inspect(path) == Verdict("vmdk", SIZE, True, "")


def test_sparse_vmdk_descriptor_without_its_end_is_refused(corpus):
    # qemu reads on past the descriptor's sectors until a NUL: what follows would count as descriptor.
    path = copy(corpus, "monolithic-sparse.vmdk", "descriptor-unterminated.vmdk")
    write_vmdk_descriptor(path, vmdk_descriptor(path).ljust(20 * 512, "#"))
    assert_refused(inspect(path), "vmdk", "does not end inside its 20 sectors")


@pytest.mark.parametrize(
    ("name", "offset", "value", "words"),
    [
        ("descriptor-huge.vmdk", 36, struct.pack("<Q", 2049), "larger than 1 MiB"),
        ("grain-huge.vmdk", 20, struct.pack("<Q", 2**22), "invalid grain size"),
        ("tables-huge.vmdk", 44, struct.pack("<I", 4096), "invalid grain size"),
        ("overhead-past-eof.vmdk", 64, struct.pack("<Q", 10**6), "lies outside the file"),
        ("version-4.vmdk", 4, struct.pack("<I", 4), "version 4 is not supported"),
    ],
)
def test_sparse_vmdk_with_a_header_out_of_bounds_is_refused(corpus, name, offset, value, words):
    path = copy(corpus, "monolithic-sparse.vmdk", name)
    patch(path, offset, value)
    assert_refused(inspect(path), "vmdk", words)


def test_vmdk_descriptor_file_naming_a_sparse_extent_is_refused_too(corpus):
    path = corpus / "descriptor-sparse.vmdk"
    path.write_bytes(
        b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicSparse"\nRW 2048 SPARSE "x.vmdk"\n'
    )
    assert_refused(inspect(path, declared_format="vmdk"), "vmdk", "'x.vmdk'", "outside the file")


# VHD --------------------------------------------------------------------------------------------------


def test_dynamic_vhd_whose_block_table_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "dynamic.vhd", "bat-past-eof.vhd")
    patch(path, 512 + 16, struct.pack(">Q", 2**33))
    verdict = inspect(path, declared_format="vhd")
    assert_refused(verdict, "vhd", "block allocation table lies outside the file")
    assert verdict.virtual_size == qemu_virtual_size(corpus / "dynamic.vhd", "vhd")


def test_differencing_vhd_is_refused_naming_its_parent(corpus):
    path = copy(corpus, "dynamic.vhd", "differencing.vhd")
    size = path.stat().st_size
    for footer in (0, size - 512):
        patch(path, footer + 60, struct.pack(">I", 4))
    patch(path, 512 + 64, "base.vhd".encode("utf-16-be"))
    assert_refused(inspect(path), "vhd", "differencing disk", "backing file) 'base.vhd'")


def test_fixed_vhd_shorter_than_its_size_is_refused(corpus):
    path = corpus / "short-fixed.vhd"
    data = (corpus / "fixed.vhd").read_bytes()
    path.write_bytes(data[: -512 - MiB] + data[-512:])
    assert_refused(inspect(path), "vhd", "fixed VHD", "upload the complete image")


def test_raw_disk_ending_in_a_vhd_footer_is_a_vhd(corpus):
    path = corpus / "raw-with-footer.img"
    path.write_bytes(bytes(4 * MiB) + (corpus / "fixed.vhd").read_bytes()[-512:])
    verdict = inspect(path)
    assert verdict.format == "vhd" and verdict.safe is False  # footer says 16 MiB, file holds 4


# VHDX -------------------------------------------------------------------------------------------------


def test_crc32c_is_castagnoli():
    assert inspection.crc32c(b"123456789") == 0xE3069283


def test_truncated_vhdx_is_refused_because_its_regions_lie_outside(corpus):
    path = copy(corpus, "plain.vhdx", "truncated.vhdx")
    with open(path, "r+b") as file:
        file.truncate(2 * MiB + MiB // 2)
    assert_refused(inspect(path), "vhdx", "block allocation table lies outside the file")


def test_vhdx_whose_region_table_points_past_the_end_is_refused(corpus):
    path = copy(corpus, "plain.vhdx", "region-past-eof.vhdx")

    def move_first_region(table: bytearray) -> None:
        table[32:40] = struct.pack("<Q", 2**40)

    rewrite_vhdx_structure(path, 192 * 1024, 64 * 1024, move_first_region)
    rewrite_vhdx_structure(path, 256 * 1024, 64 * 1024, move_first_region)
    assert_refused(inspect(path), "vhdx", "lies outside the file")


def test_vhdx_with_a_parent_locator_is_refused_as_backing_file(corpus):
    path = copy(corpus, "plain.vhdx", "differencing.vhdx")
    virtual_disk_id = uuid.UUID("beca12ab-b2e6-4523-93ef-c309e000c746").bytes_le
    parent_locator = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c").bytes_le
    data = path.read_bytes()
    assert data.count(virtual_disk_id) == 1
    path.write_bytes(data.replace(virtual_disk_id, parent_locator))
    verdict = inspect(path)
    assert_refused(verdict, "vhdx", "parent locator", "backing file")


def test_vhdx_with_an_unreplayed_log_is_refused(corpus):
    path = copy(corpus, "plain.vhdx", "dirty-log.vhdx")

    def set_log_guid(header: bytearray) -> None:
        header[48:64] = uuid.uuid4().bytes

    rewrite_vhdx_structure(path, 64 * 1024, 4096, set_log_guid)
    rewrite_vhdx_structure(path, 128 * 1024, 4096, set_log_guid)
    assert_refused(inspect(path), "vhdx", "log was never replayed", "qemu-img check -r all")


def test_vhdx_with_broken_header_checksums_is_refused(corpus):
    path = copy(corpus, "plain.vhdx", "bad-checksum.vhdx")
    patch(path, 64 * 1024 + 100, b"x")
    patch(path, 128 * 1024 + 100, b"x")
    assert_refused(inspect(path), "vhdx", "no valid header")


# Everything else ---------------------------------------------------------------------------------------


def test_qed_is_refused_as_unsupported(corpus):
    assert_refused(inspect(corpus / "plain.qed"), "qed", "QED images are not supported", "-O qcow2")


def test_qed_declared_qcow2_is_refused_naming_qed(corpus):
    assert inspect(corpus / "plain.qed", "qcow2").reason == "format 'qcow2' but file has QED signature"


def test_empty_file_is_refused(corpus):
    path = corpus / "empty.img"
    path.write_bytes(b"")
    assert_refused(inspect(path, declared_format="raw"), None, "empty", "upload the image again")


def test_file_smaller_than_a_sector_is_refused(corpus):
    path = corpus / "tiny.img"
    path.write_bytes(b"x" * 100)
    assert_refused(inspect(path), "raw", "only 100 bytes")


def test_missing_file_is_refused(corpus):
    assert_refused(inspect(corpus / "nope.img"), None, "missing")


def test_directory_is_refused(corpus):
    assert_refused(inspect(corpus), None, "not a regular file")


# The management command --------------------------------------------------------------------------------


def test_command_prints_the_verdict_and_exits_zero_for_a_safe_image(corpus, capsys):
    call_command("inspect_image", str(corpus / "plain.qcow2"))
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"format": "qcow2", "virtual_size": SIZE, "safe": True, "reason": ""}
    assert captured.err == ""


def test_command_exits_one_for_a_refused_image(corpus, capsys):
    with pytest.raises(SystemExit) as excinfo:
        call_command("inspect_image", str(corpus / "monolithic-sparse.vmdk"), "--declared-format", "qcow2")
    assert excinfo.value.code == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {
        "format": "vmdk",
        "virtual_size": None,
        "safe": False,
        "reason": "format 'qcow2' but file has VMDK signature",
    }
    assert captured.out.count("\n") == 1


def test_command_exits_one_for_a_missing_file(corpus, capsys):
    with pytest.raises(SystemExit) as excinfo:
        call_command("inspect_image", str(corpus / "nope.img"))
    assert excinfo.value.code == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["safe"] is False and "missing" in verdict["reason"]
