"""Decide an uploaded disk image's format from its bytes and refuse files unsafe to hand to qemu-img.

This runs before any tool opens the file. qemu-img's own probing trusts the first bytes and nothing
else: a raw disk whose first sector is a qcow2 header opens as qcow2 (with that header's backing
file), a fixed VHD opens as raw, a VMDK named .qcow2 opens as VMDK. So the format comes from the
content, checked here, and every later qemu-img call passes it explicitly with `-f QEMU_FORMAT[...]`.

Only headers are read (a few KiB at known offsets), never the whole file, so memory stays constant
whatever the upload's size. Pure Python, no Django: workers and the management command both use it.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import uuid
from dataclasses import dataclass
from typing import BinaryIO

FORMATS = ("qcow2", "raw", "vmdk", "vhd", "vhdx", "iso")
QEMU_FORMAT = {"qcow2": "qcow2", "raw": "raw", "vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "iso": "raw"}

# How a format is named in the messages users see ("file has VMDK signature").
SIGNATURE_NAMES = {
    "qcow2": "QCOW2",
    "raw": "RAW",
    "vmdk": "VMDK",
    "vhd": "VHD",
    "vhdx": "VHDX",
    "iso": "ISO",
    "qed": "QED",
}

KiB, MiB = 2**10, 2**20
SECTOR = 512
HASH_CHUNK = MiB
PROBE_SIZE = 2 * KiB  # as much of the start as qemu's format probing looks at

CONVERT_HINT = "convert it with `qemu-img convert -O qcow2 <file> <new file>` and upload the result"
REUPLOAD_HINT = "the upload is incomplete or the file is damaged, so upload the complete image again"

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_INCOMPAT_CORRUPT = 1 << 1
QCOW2_INCOMPAT_DATA_FILE = 1 << 2
# dirty, corrupt, external data file, compression type, extended L2: the bits qemu 7 knows.
QCOW2_INCOMPAT_KNOWN = 0b11111
QCOW2_EXT_DATA_FILE = 0x44415441
QCOW2_EXT_BITMAPS = 0x23852875
QCOW2_MAX_SNAPSHOTS = 65536  # qemu refuses more, so a larger count is a crafted header
QCOW2_SNAPSHOT_HEADER = struct.Struct(">QIHHIIQII")

VMDK_GD_AT_END = 0xFFFFFFFFFFFFFFFF
VMDK_DESCRIPTOR_SECTOR = 1  # where qemu reads a sparse file's descriptor text, whatever its header says
VMDK_MAX_DESCRIPTOR = MiB
VMDK_MAX_GRAIN = 0x200000  # sectors; qemu refuses larger grains
VMDK_MARKER_END_OF_STREAM, VMDK_MARKER_FOOTER = 0, 3
VMDK_NO_PARENT = "ffffffff"
VMDK_SPARSE_TYPES = ("monolithicSparse", "streamOptimized")
# Only the forms qemu-img and VMware write; a line that is neither is refused, never skipped.
VMDK_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)[ \t]+(\d+)[ \t]+([A-Z]+)[ \t]+"([^"]*)"(?:[ \t]+(\d+))?$')
VMDK_SETTING = re.compile(r'^([A-Za-z][A-Za-z0-9_.]*)[ \t]*=[ \t]*("[^"]*"|[^"\s]+)$')
VMDK_PARENT_HINT = re.compile(r'parentFileNameHint[^"\n]*"([^"\n]*)"', re.IGNORECASE)

VHD_FIXED, VHD_DYNAMIC, VHD_DIFFERENCING = 2, 3, 4

VHDX_HEADER_OFFSETS = (64 * KiB, 128 * KiB)
VHDX_REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
VHDX_REGION_TABLE_SIZE = 64 * KiB
VHDX_MAX_ENTRIES = 2047
VHDX_REGION_BAT = uuid.UUID("2dc27766-f623-4200-9d64-115e9bfd4a08")
VHDX_REGION_METADATA = uuid.UUID("8b7ca206-4790-4b9a-b8fe-575f050f886e")
VHDX_REGION_NAMES = {
    VHDX_REGION_BAT: "VHDX block allocation table",
    VHDX_REGION_METADATA: "VHDX metadata region",
}
VHDX_FILE_PARAMETERS = uuid.UUID("caa16737-fa36-4d43-b3b6-33f0aa44e76b")
VHDX_VIRTUAL_DISK_SIZE = uuid.UUID("2fa54224-cd1b-4876-b211-5dbed83bf4b8")
VHDX_PARENT_LOCATOR = uuid.UUID("a8d35f2d-b30b-454d-abf7-d3d84834ab0c")
VHDX_HAS_PARENT = 1 << 1

ISO_MAGIC_OFFSET = 0x8001  # "CD001" of the first volume descriptor, after the 32 KiB system area


@dataclass(frozen=True)
class Verdict:
    format: str | None
    virtual_size: int | None
    safe: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "format": self.format,
            "virtual_size": self.virtual_size,
            "safe": self.safe,
            "reason": self.reason,
        }


class _Refusal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Image:
    """Bounded reads at offsets; checks record the virtual size as soon as they know it, so a refusal
    after that point still reports it."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file = file
        self.size = size
        self.virtual_size: int | None = None

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset < 0 or offset >= self.size:
            return b""
        self.file.seek(offset)
        return self.file.read(min(length, self.size - offset))

    def header(self, offset: int, length: int, what: str) -> bytes:
        data = self.read(offset, length)
        if len(data) < length:
            raise _Refusal(f"the file ({self.size} bytes) ends inside its {what}; {REUPLOAD_HINT}.")
        return data

    def require_inside(self, offset: int, length: int, what: str) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise _Refusal(
                f"the {what} lies outside the file (bytes {offset} to {offset + length} of a "
                f"{self.size}-byte file); {REUPLOAD_HINT}."
            )


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB chunks into one reused buffer (constant memory)."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def inspect(path: str | os.PathLike[str], declared_format: str | None = None) -> Verdict:
    """The format the file's bytes say, its virtual size, and whether it is safe to give to qemu-img
    with `-f QEMU_FORMAT[format]`. Never raises for a bad or missing file: the verdict says why."""
    try:
        # O_NONBLOCK so that a FIFO planted at the path cannot hang the caller before the fstat below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return Verdict(None, None, False, "the image file is missing; upload it again.")
    except OSError as error:
        return Verdict(
            None, None, False, f"the image file cannot be read ({error.strerror}); upload it again."
        )
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return Verdict(None, None, False, "the upload is not a regular file; upload the disk image itself.")
    with os.fdopen(fd, "rb") as file:
        return _inspect_file(_Image(file, info.st_size), declared_format)


def _inspect_file(image: _Image, declared_format: str | None) -> Verdict:
    if image.size == 0:
        return Verdict(None, None, False, "the file is empty; the upload failed, upload the image again.")
    if declared_format is not None and declared_format.lower() not in FORMATS:
        return Verdict(
            None,
            None,
            False,
            f"format '{declared_format}' is not accepted; declare one of {', '.join(FORMATS)}.",
        )
    detected, nested_reason = _detect(image)
    if nested_reason:
        return Verdict(detected, None, False, nested_reason)
    if declared_format is not None and declared_format.lower() != detected:
        return Verdict(
            detected,
            None,
            False,
            f"format '{declared_format}' but file has {SIGNATURE_NAMES[detected]} signature",
        )
    try:
        CHECKS[detected](image)
    except _Refusal as refusal:
        return Verdict(detected, image.virtual_size, False, refusal.reason)
    return Verdict(detected, image.virtual_size, True, "")


def _detect(image: _Image) -> tuple[str, str]:
    """The format and, when the file is also another format (a polyglot), the reason to refuse it."""
    first = _format_at_start(image.read(0, PROBE_SIZE))
    has_footer = image.size >= SECTOR and image.read(image.size - SECTOR, 8) == b"conectix"
    is_iso = image.read(ISO_MAGIC_OFFSET, 5) == b"CD001"
    if first and is_iso:
        # The ISO system area is free for boot code, but a disk image header there makes the same file
        # mean two different disks depending on who reads it.
        return "iso", (
            f"the file carries a {SIGNATURE_NAMES[first]} header inside an ISO 9660 image, so it reads "
            "as two different disks; upload either a plain ISO or a plain disk image."
        )
    if first and first != "vhd" and has_footer:
        return first, (
            f"the file carries a VHD footer at the end of a {SIGNATURE_NAMES[first]} image, so it reads as "
            f"two different disks; {CONVERT_HINT}."
        )
    if first:
        return first, ""
    if has_footer:
        return "vhd", ""  # a fixed VHD: guest data from offset 0, the footer only at the end
    if is_iso:
        return "iso", ""
    return "raw", ""


def _format_at_start(head: bytes) -> str | None:
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(b"QED\x00"):
        return "qed"
    if head.startswith((b"KDMV", b"COWD")) or _is_vmdk_descriptor(head):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix"):
        return "vhd"  # the footer copy a dynamic or differencing VHD keeps at offset 0
    return None


def _is_vmdk_descriptor(head: bytes) -> bool:
    if head.startswith(b"# Disk DescriptorFile"):
        return True
    # qemu also opens as VMDK a text whose first line that is neither blank nor a comment is `version=N`.
    for line in head.split(b"\n"):
        line = line.strip(b" \r")
        if line and not line.startswith(b"#"):
            return line in (b"version=1", b"version=2", b"version=3")
    return False


def _printable(raw: bytes, limit: int = 120) -> str:
    text = raw.decode("utf-8", errors="replace")
    text = "".join(char if char.isprintable() else "?" for char in text)
    return text[:limit] + ("…" if len(text) > limit else "")


# qcow2 -----------------------------------------------------------------------------------------------


def _check_qcow2(image: _Image) -> None:
    header = image.header(0, 72, "qcow2 header")
    (
        _magic,
        version,
        backing_offset,
        backing_size,
        cluster_bits,
        virtual_size,
        crypt_method,
        l1_size,
        l1_offset,
        refcount_offset,
        refcount_clusters,
        snapshot_count,
        snapshots_offset,
    ) = struct.unpack(">4sIQIIQIIQQIIQ", header)
    image.virtual_size = virtual_size
    if version not in (2, 3):
        raise _Refusal(f"qcow2 version {version} is not supported (only 2 and 3); {CONVERT_HINT}.")
    incompatible, header_length = 0, 72
    if version == 3:
        incompatible, _compatible, _autoclear, _refcount_order, header_length = struct.unpack(
            ">QQQII", image.header(72, 32, "qcow2 version 3 header")
        )
    if not 9 <= cluster_bits <= 21:
        raise _Refusal(
            f"qcow2 header has cluster_bits {cluster_bits}, outside 9 to 21, so it is damaged or crafted; "
            f"{CONVERT_HINT}."
        )
    cluster_size = 1 << cluster_bits
    if version == 3 and (header_length < 104 or header_length % 8 or header_length > cluster_size):
        raise _Refusal(
            f"qcow2 header length {header_length} is invalid, so the file is damaged; {CONVERT_HINT}."
        )
    extensions = _qcow2_extensions(image, header_length, cluster_size)

    if backing_offset or backing_size:
        name = image.read(backing_offset, backing_size) if 0 < backing_size < 1024 else b""
        named = f" '{_printable(name)}'" if name else ""
        raise _Refusal(
            f"qcow2 image has a backing file{named}; flatten it with "
            "`qemu-img convert -O qcow2 <file> <flat>` and upload the result."
        )
    if incompatible & QCOW2_INCOMPAT_DATA_FILE or QCOW2_EXT_DATA_FILE in extensions:
        name = extensions.get(QCOW2_EXT_DATA_FILE, b"")
        named = f" '{_printable(name)}'" if name else ""
        raise _Refusal(
            f"qcow2 image keeps its data in an external data file{named}; make it one file with "
            "`qemu-img convert -O qcow2 <file> <flat>` and upload the result."
        )
    unknown = incompatible & ~QCOW2_INCOMPAT_KNOWN
    if unknown:
        raise _Refusal(f"qcow2 image uses unknown incompatible features (bits {unknown:#x}); {CONVERT_HINT}.")
    if incompatible & QCOW2_INCOMPAT_CORRUPT:
        raise _Refusal(
            "qcow2 image is marked corrupt; repair it with `qemu-img check -r all <file>` "
            "and upload it again."
        )
    if crypt_method:
        raise _Refusal(
            "encrypted qcow2 images are not supported; convert it to an unencrypted image with "
            "`qemu-img convert` and upload the result."
        )

    if l1_size:
        if l1_offset % cluster_size:
            raise _Refusal(f"qcow2 L1 table offset {l1_offset} is not cluster aligned; {REUPLOAD_HINT}.")
        image.require_inside(l1_offset, l1_size * 8, "qcow2 L1 table")
    if refcount_clusters == 0 or refcount_offset % cluster_size:
        raise _Refusal(f"qcow2 refcount table is missing or misaligned; {REUPLOAD_HINT}.")
    image.require_inside(refcount_offset, refcount_clusters * cluster_size, "qcow2 refcount table")
    if snapshot_count:
        _check_qcow2_snapshots(image, snapshots_offset, snapshot_count)
    if QCOW2_EXT_BITMAPS in extensions:
        bitmaps = extensions[QCOW2_EXT_BITMAPS]
        if len(bitmaps) < 24:
            raise _Refusal(f"qcow2 bitmaps header extension is too short; {REUPLOAD_HINT}.")
        directory_size, directory_offset = struct.unpack(">QQ", bitmaps[8:24])
        image.require_inside(directory_offset, directory_size, "qcow2 bitmap directory")


def _qcow2_extensions(image: _Image, start: int, cluster_size: int) -> dict[int, bytes]:
    """Header extensions of the first cluster: the data of the types inspected, b"" for the others."""
    extensions: dict[int, bytes] = {}
    offset = start
    end = min(cluster_size, image.size)
    while offset + 8 <= end:
        kind, length = struct.unpack(">II", image.read(offset, 8))
        if kind == 0:
            break
        if offset + 8 + length > cluster_size:
            raise _Refusal(f"a qcow2 header extension runs past the first cluster; {REUPLOAD_HINT}.")
        wanted = kind in (QCOW2_EXT_DATA_FILE, QCOW2_EXT_BITMAPS)
        extensions.setdefault(kind, image.read(offset + 8, length) if wanted else b"")
        offset += 8 + (length + 7) // 8 * 8
    return extensions


def _check_qcow2_snapshots(image: _Image, table_offset: int, count: int) -> None:
    if count > QCOW2_MAX_SNAPSHOTS:
        raise _Refusal(
            f"qcow2 header claims {count} internal snapshots, more than qemu allows; {REUPLOAD_HINT}."
        )
    offset = end = table_offset
    for _ in range(count):
        entry = image.header(offset, QCOW2_SNAPSHOT_HEADER.size, "qcow2 snapshot table")
        l1_offset, l1_size, id_size, name_size, *_times, _vm_state, extra_size = QCOW2_SNAPSHOT_HEADER.unpack(
            entry
        )
        image.require_inside(l1_offset, l1_size * 8, "L1 table of a qcow2 internal snapshot")
        end = offset + QCOW2_SNAPSHOT_HEADER.size + extra_size + id_size + name_size
        offset = (end + 7) // 8 * 8  # entries start 8-aligned; the padding of the last one may be missing
    image.require_inside(table_offset, end - table_offset, "qcow2 snapshot table")


# VMDK ------------------------------------------------------------------------------------------------
#
# qemu reads a sparse VMDK (KDMV) from its header, but it also searches the text from sector 1 on,
# whatever the header's descriptorOffset says: `parentFileNameHint` anywhere in it (in a comment, a ddb
# key) makes qemu open that host file as a backing VMDK. With capacity 0 it opens the descriptor's
# extents instead, which may be any host file; with the grain directory "at the end" the footer's header
# replaces the first one. So, after the format-inspector fixes for CVE-2024-32498 (OSSA-2024-001):
# - header: version 1 to 3, capacity above 0, sane grains, a whole number of sectors;
# - footer (when used): well-formed markers, the same disk as the header, no further footer;
# - descriptor: at sector 1, at most 1 MiB, inside the file, ending (NUL) inside its sectors, ASCII;
#   every line blank, a comment, a `key = value` setting or an extent, anything else is refused;
#   createType written once, "monolithicSparse" or "streamOptimized"; no parent (no parentFileNameHint
#   anywhere, parentCID absent or ffffffff); exactly one SPARSE extent of the capacity's sectors, named
#   by a bare file name.
# Descriptor files (text VMDKs) keep their data in other files and are refused whole.

VMDK_ONE_FILE_HINT = (
    "convert it to one file with `qemu-img convert -O vmdk -o subformat=streamOptimized <file> <new file>` "
    "and upload the result"
)


@dataclass(frozen=True)
class _VmdkHeader:
    version: int
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    entries_per_table: int
    redundant_directory: int
    directory: int
    overhead: int

    @classmethod
    def parse(cls, raw: bytes) -> _VmdkHeader:
        (_magic, version, _flags, *fields) = struct.unpack("<4sIIQQQQIQQQ", raw[:72])
        return cls(version, *fields)

    def disk(self) -> tuple[int, ...]:
        """What qemu takes from whichever header it reads: the disk's shape and where its descriptor is."""
        fields = (self.version, self.capacity, self.grain_size, self.entries_per_table)
        return (*fields, self.descriptor_offset, self.descriptor_size)


@dataclass(frozen=True)
class _VmdkExtent:
    access: str
    sectors: int
    kind: str
    name: str
    offset: str | None


def _check_vmdk(image: _Image) -> None:
    magic = image.read(0, 4)
    if magic == b"COWD":
        raise _Refusal(f"VMDK version 3 (COWD) images are not supported; {CONVERT_HINT}.")
    if magic != b"KDMV":
        _check_vmdk_descriptor_file(image)
        return
    header = _VmdkHeader.parse(image.header(0, 72, "VMDK sparse header"))
    image.virtual_size = header.capacity * SECTOR
    if header.version not in (1, 2, 3):
        raise _Refusal(f"VMDK sparse version {header.version} is not supported; {CONVERT_HINT}.")
    if header.capacity == 0:
        # qemu then reads the disk from the extents of the embedded descriptor, which may be other files.
        raise _Refusal(
            f"VMDK header has capacity 0, so its data would come from other files; {CONVERT_HINT}."
        )
    grain = header.grain_size
    if not 0 < grain <= VMDK_MAX_GRAIN or grain & (grain - 1) or not 0 < header.entries_per_table <= 512:
        raise _Refusal(f"VMDK header has an invalid grain size or grain table size; {REUPLOAD_HINT}.")
    if image.size % SECTOR:
        # qemu finds the footer from the size rounded up to a sector: it would read other bytes than these.
        raise _Refusal(
            f"VMDK file is {image.size} bytes, not a whole number of 512-byte sectors; {REUPLOAD_HINT}."
        )
    if header.directory == VMDK_GD_AT_END:
        header = _vmdk_footer(image, header)
    sectors_per_table = header.grain_size * header.entries_per_table
    directory_bytes = (header.capacity + sectors_per_table - 1) // sectors_per_table * 4
    image.require_inside(header.directory * SECTOR, directory_bytes, "VMDK grain directory")
    if header.redundant_directory:
        image.require_inside(
            header.redundant_directory * SECTOR, directory_bytes, "VMDK redundant grain directory"
        )
    image.require_inside(0, header.overhead * SECTOR, "VMDK metadata (header to first grain)")
    _check_vmdk_embedded_descriptor(image, header)


def _vmdk_footer(image: _Image, header: _VmdkHeader) -> _VmdkHeader:
    """The header qemu uses when the grain directory is "at the end": the footer's, between a footer
    marker and the end-of-stream marker in the last three sectors."""
    if image.size < 4 * SECTOR:
        raise _Refusal(f"streamOptimized VMDK ends without its footer; {REUPLOAD_HINT}.")
    tail = image.header(image.size - 3 * SECTOR, 3 * SECTOR, "VMDK stream footer")
    _value, marker_size, marker_type = struct.unpack("<QII", tail[:16])
    end_value, end_size, end_type = struct.unpack("<QII", tail[2 * SECTOR : 2 * SECTOR + 16])
    if (
        not tail[SECTOR:].startswith(b"KDMV")
        or (marker_size, marker_type) != (0, VMDK_MARKER_FOOTER)
        or (end_value, end_size, end_type) != (0, 0, VMDK_MARKER_END_OF_STREAM)
    ):
        raise _Refusal(f"streamOptimized VMDK ends without its footer; {REUPLOAD_HINT}.")
    footer = _VmdkHeader.parse(tail[SECTOR : SECTOR + 72])
    if footer.directory == VMDK_GD_AT_END:
        raise _Refusal(f"VMDK footer points to yet another footer; {REUPLOAD_HINT}.")
    if footer.disk() != header.disk():
        raise _Refusal(
            "VMDK footer describes another disk than the header (size, grains or descriptor), so the file "
            f"reads differently depending on which one a tool believes; {CONVERT_HINT}."
        )
    return footer


def _check_vmdk_embedded_descriptor(image: _Image, header: _VmdkHeader) -> None:
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        raise _Refusal(
            "VMDK sparse file has no embedded descriptor, so it is one extent of a split disk; "
            f"{VMDK_ONE_FILE_HINT}."
        )
    if header.descriptor_offset != VMDK_DESCRIPTOR_SECTOR:
        raise _Refusal(
            f"VMDK embedded descriptor is at sector {header.descriptor_offset}, but qemu reads a sparse "
            f"file's descriptor at sector {VMDK_DESCRIPTOR_SECTOR}, so the file would mean two different "
            f"disks; {CONVERT_HINT}."
        )
    length = header.descriptor_size * SECTOR
    if length > VMDK_MAX_DESCRIPTOR:
        raise _Refusal(
            f"VMDK embedded descriptor is larger than 1 MiB, which no tool writes; {REUPLOAD_HINT}."
        )
    offset = header.descriptor_offset * SECTOR
    image.require_inside(offset, length, "VMDK embedded descriptor")
    raw, end, _padding = image.read(offset, length).partition(b"\0")
    if not end:
        # qemu reads on past the descriptor's sectors until a NUL: text there would count too.
        raise _Refusal(
            f"VMDK embedded descriptor does not end inside its {header.descriptor_size} sectors; "
            f"{REUPLOAD_HINT}."
        )
    _check_vmdk_descriptor_text(_vmdk_text(raw), header.capacity)


def _vmdk_text(raw: bytes) -> str:
    text = raw.decode("ascii", errors="replace")
    bad = next((index for index, char in enumerate(text) if not _vmdk_text_char(char)), None)
    if bad is not None:
        raise _Refusal(
            f"VMDK embedded descriptor is not plain ASCII text (byte {bad} is not); {CONVERT_HINT}."
        )
    return text


def _vmdk_text_char(char: str) -> bool:
    return char in "\t\r\n" or " " <= char <= "~"


def _check_vmdk_descriptor_text(text: str, capacity: int) -> None:
    lowered = text.lower()
    if "parentfilenamehint" in lowered:
        # qemu finds the name wherever it is written, in a comment or a ddb key as well.
        named = VMDK_PARENT_HINT.search(text)
        raise _Refusal(
            f"VMDK image has a parent (backing file) '{_printable((named[1] if named else '').encode())}'; "
            f"{CONVERT_HINT}."
        )
    settings, extents, unknown = _parse_vmdk_descriptor(text)
    if unknown:
        raise _Refusal(
            f"VMDK descriptor line '{_printable(unknown[0].encode())}' is neither a setting nor an extent; "
            f"{CONVERT_HINT}."
        )
    keys = [key.lower() for key, _value in settings]
    twice = next((key for key, _value in settings if keys.count(key.lower()) > 1), None)
    if twice:
        raise _Refusal(f"VMDK descriptor sets {_printable(twice.encode())} more than once; {CONVERT_HINT}.")
    values = {key.lower(): value for key, value in settings}
    # qemu looks these up as plain text, so they may appear nowhere but in their own setting.
    parent_cid = values.get("parentcid", VMDK_NO_PARENT).strip('"')
    if parent_cid.lower() != VMDK_NO_PARENT or lowered.count("parentcid") > keys.count("parentcid"):
        raise _Refusal(
            f"VMDK image is a differencing disk (parentCID {_printable(parent_cid.encode())}): its data "
            f"needs a parent file; {CONVERT_HINT}."
        )
    create_type = values.get("createtype", "")
    shown = create_type.strip('"')
    quoted = create_type == f'"{shown}"'
    if shown not in VMDK_SPARSE_TYPES or not quoted or lowered.count("createtype") != 1:
        raise _Refusal(
            f"VMDK createType '{_printable(shown.encode())}' is not accepted (only monolithicSparse and "
            f'streamOptimized, written once as createType="..."); {VMDK_ONE_FILE_HINT}.'
        )
    if len(extents) != 1 or not _is_own_extent(extents[0]):
        described = ", ".join(f"{extent.kind} '{_printable(extent.name.encode())}'" for extent in extents)
        raise _Refusal(
            f"VMDK embedded descriptor names another file ({described or 'no extent'}); "
            f"only one SPARSE extent inside the file is accepted, {VMDK_ONE_FILE_HINT}."
        )
    if extents[0].sectors != capacity:
        raise _Refusal(
            f"VMDK descriptor's extent has {extents[0].sectors} sectors but its header {capacity}; "
            f"{REUPLOAD_HINT}."
        )


def _is_own_extent(extent: _VmdkExtent) -> bool:
    """The extent of a one-file sparse VMDK: the file itself, named without a path."""
    name = extent.name
    return (
        extent.kind == "SPARSE"
        and extent.offset is None
        and bool(name)
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
    )


def _check_vmdk_descriptor_file(image: _Image) -> None:
    text = image.read(0, 64 * KiB).decode("utf-8", errors="replace")
    settings, extents, _unknown = _parse_vmdk_descriptor(text)
    image.virtual_size = sum(extent.sectors for extent in extents) * SECTOR or None
    create_type = dict(settings).get("createType", "no createType").strip('"')
    names = ", ".join(f"'{_printable(extent.name.encode())}'" for extent in extents if extent.name)
    raise _Refusal(
        f"VMDK descriptor file ({_printable(create_type.encode())}) keeps the disk's data in "
        f"other files ({names or 'none named'}), extents outside the file; {VMDK_ONE_FILE_HINT}."
    )


def _parse_vmdk_descriptor(text: str) -> tuple[list[tuple[str, str]], list[_VmdkExtent], list[str]]:
    """Settings (key, value as written), extents, and the lines that are neither, of a descriptor's
    text. Lines end at LF only, as qemu reads them; comments and blank lines are skipped."""
    settings: list[tuple[str, str]] = []
    extents: list[_VmdkExtent] = []
    unknown: list[str] = []
    for line in text.split("\n"):
        line = line.strip(" \t\r")
        if not line or line.startswith("#"):
            continue
        if extent := VMDK_EXTENT.match(line):
            access, sectors, kind, name, offset = extent.groups()
            extents.append(_VmdkExtent(access, int(sectors), kind, name, offset))
        elif setting := VMDK_SETTING.match(line):
            settings.append((setting[1], setting[2]))
        else:
            unknown.append(line)
    return settings, extents, unknown


# VHD -------------------------------------------------------------------------------------------------


def _check_vhd(image: _Image) -> None:
    copy = image.read(0, SECTOR)
    has_copy = copy.startswith(b"conectix")
    end = image.read(image.size - SECTOR, SECTOR) if image.size >= SECTOR else b""
    has_footer = end.startswith(b"conectix")
    # qemu reads the copy at offset 0 when there is one, so that is the one that must be checked.
    footer = copy if has_copy else end
    if len(footer) < SECTOR:
        raise _Refusal(f"the file ({image.size} bytes) ends inside its VHD footer; {REUPLOAD_HINT}.")
    data_offset, current_size, disk_type = _vhd_footer_fields(footer)
    image.virtual_size = current_size
    if disk_type == VHD_DIFFERENCING:
        parent = _vhd_parent_name(image, data_offset)
        named = f" '{parent}'" if parent else ""
        raise _Refusal(
            f"VHD is a differencing disk with a parent (backing file){named}; "
            f"merge it into a fixed or dynamic VHD, or {CONVERT_HINT}."
        )
    if disk_type not in (VHD_FIXED, VHD_DYNAMIC):
        raise _Refusal(
            f"VHD disk type {disk_type} is not supported (only fixed and dynamic); {CONVERT_HINT}."
        )
    if disk_type == VHD_FIXED:
        if has_copy:
            raise _Refusal(
                f"fixed VHD has a footer copy at its start, which fixed disks never have; {CONVERT_HINT}."
            )
        if image.size != current_size + SECTOR:
            raise _Refusal(
                f"fixed VHD of {current_size} bytes should be {current_size + SECTOR} bytes long "
                f"but the file is {image.size}; {REUPLOAD_HINT}."
            )
        return
    if not has_copy or not has_footer:
        raise _Refusal(f"dynamic VHD needs its footer both at the start and at the end; {REUPLOAD_HINT}.")
    if _vhd_footer_fields(end) != (data_offset, current_size, disk_type):
        raise _Refusal(f"VHD footer and its copy at the start describe different disks; {REUPLOAD_HINT}.")
    image.require_inside(data_offset, 1024, "VHD dynamic disk header")
    dynamic = image.header(data_offset, 1024, "VHD dynamic disk header")
    if not dynamic.startswith(b"cxsparse"):
        raise _Refusal(f"VHD dynamic disk header has no 'cxsparse' cookie; {REUPLOAD_HINT}.")
    table_offset, _version, table_entries, block_size = struct.unpack(">QIII", dynamic[16:36])
    if block_size < SECTOR or block_size & (block_size - 1):
        raise _Refusal(f"VHD block size {block_size} is invalid; {REUPLOAD_HINT}.")
    image.require_inside(table_offset, table_entries * 4, "VHD block allocation table")


def _vhd_footer_fields(footer: bytes) -> tuple[int, int, int]:
    """Data offset, current (virtual) size and disk type."""
    data_offset = struct.unpack(">Q", footer[16:24])[0]
    current_size, _geometry, disk_type = struct.unpack(">QII", footer[48:64])
    return data_offset, current_size, disk_type


def _vhd_parent_name(image: _Image, data_offset: int) -> str:
    name = image.read(data_offset + 64, 512) if data_offset + 64 + 512 <= image.size else b""
    return _printable(name.decode("utf-16-be", errors="replace").split("\0", 1)[0].encode())


# VHDX ------------------------------------------------------------------------------------------------


def _check_vhdx(image: _Image) -> None:
    image.header(0, 8, "VHDX file identifier")
    headers = []
    for offset in VHDX_HEADER_OFFSETS:
        header = image.read(offset, 4 * KiB)
        if len(header) == 4 * KiB and header.startswith(b"head") and _checksum_matches(header):
            headers.append(header)
    if not headers:
        raise _Refusal(f"VHDX has no valid header at 64 KiB or 128 KiB; {REUPLOAD_HINT}.")
    # The header with the higher sequence number is the current one.
    header = max(headers, key=lambda candidate: struct.unpack("<Q", candidate[8:16])[0])
    log_guid = header[48:64]
    _log_version, version, log_length, log_offset = struct.unpack("<HHIQ", header[64:80])
    if version != 1:
        raise _Refusal(f"VHDX version {version} is not supported; {CONVERT_HINT}.")
    if log_guid != bytes(16):
        raise _Refusal(
            "VHDX image was not closed cleanly (its log was never replayed); run "
            "`qemu-img check -r all <file>` on it, or open and close it in Hyper-V, and upload it again."
        )
    if log_length:
        image.require_inside(log_offset, log_length, "VHDX log")

    table = b""
    for offset in VHDX_REGION_TABLE_OFFSETS:
        candidate = image.read(offset, VHDX_REGION_TABLE_SIZE)
        if len(candidate) == VHDX_REGION_TABLE_SIZE and candidate.startswith(b"regi"):
            if _checksum_matches(candidate):
                table = candidate
                break
    if not table:
        raise _Refusal(f"VHDX has no valid region table at 192 KiB or 256 KiB; {REUPLOAD_HINT}.")
    count = struct.unpack("<I", table[8:12])[0]
    if count > VHDX_MAX_ENTRIES:
        raise _Refusal(f"VHDX region table claims {count} entries; {REUPLOAD_HINT}.")
    metadata: tuple[int, int] | None = None
    for index in range(count):
        entry = table[16 + index * 32 : 48 + index * 32]
        guid = uuid.UUID(bytes_le=entry[:16])
        offset, length, required = struct.unpack("<QII", entry[16:32])
        image.require_inside(offset, length, VHDX_REGION_NAMES.get(guid, f"VHDX region {guid}"))
        if guid == VHDX_REGION_METADATA:
            metadata = (offset, length)
        elif guid != VHDX_REGION_BAT and required & 1:
            raise _Refusal(f"VHDX requires an unknown region {guid}; {CONVERT_HINT}.")
    if metadata is None:
        raise _Refusal(f"VHDX has no metadata region; {REUPLOAD_HINT}.")
    _check_vhdx_metadata(image, *metadata)


def _check_vhdx_metadata(image: _Image, region_offset: int, region_length: int) -> None:
    table_header = image.header(region_offset, 32, "VHDX metadata table")
    if not table_header.startswith(b"metadata"):
        raise _Refusal(f"VHDX metadata table has no 'metadata' signature; {REUPLOAD_HINT}.")
    count = struct.unpack("<H", table_header[10:12])[0]
    if count > VHDX_MAX_ENTRIES:
        raise _Refusal(f"VHDX metadata table claims {count} entries; {REUPLOAD_HINT}.")
    entries = image.header(region_offset + 32, count * 32, "VHDX metadata table")
    virtual_size = None
    for index in range(count):
        entry = entries[index * 32 : index * 32 + 32]
        item = uuid.UUID(bytes_le=entry[:16])
        offset, length = struct.unpack("<II", entry[16:24])
        if length and (offset < 64 * KiB or offset + length > region_length):
            raise _Refusal(f"VHDX metadata item {item} lies outside the metadata region; {REUPLOAD_HINT}.")
        if item == VHDX_PARENT_LOCATOR:
            raise _Refusal(
                "VHDX is a differencing disk with a parent locator (backing file); merge it in Hyper-V, or "
                f"{CONVERT_HINT}."
            )
        if item == VHDX_FILE_PARAMETERS and length >= 8:
            flags = struct.unpack("<I", image.header(region_offset + offset + 4, 4, "VHDX file parameters"))[
                0
            ]
            if flags & VHDX_HAS_PARENT:
                raise _Refusal(
                    "VHDX is a differencing disk (its file parameters say it has a parent, a backing file); "
                    f"merge it in Hyper-V, or {CONVERT_HINT}."
                )
        if item == VHDX_VIRTUAL_DISK_SIZE and length >= 8:
            virtual_size = struct.unpack(
                "<Q", image.header(region_offset + offset, 8, "VHDX virtual disk size")
            )[0]
    if virtual_size is None:
        raise _Refusal(f"VHDX metadata has no virtual disk size; {REUPLOAD_HINT}.")
    image.virtual_size = virtual_size


def _checksum_matches(structure: bytes) -> bool:
    """VHDX headers and region tables hold a CRC-32C of themselves at offset 4, computed with it zeroed."""
    stored = struct.unpack("<I", structure[4:8])[0]
    return crc32c(structure[:4] + bytes(4) + structure[8:]) == stored


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as VHDX uses; the standard library only has the zlib CRC-32."""
    crc = 0xFFFFFFFF
    table = CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ISO, raw, QED ---------------------------------------------------------------------------------------


def _check_iso(image: _Image) -> None:
    image.virtual_size = image.size


def _check_raw(image: _Image) -> None:
    image.virtual_size = image.size
    if image.size < SECTOR:
        raise _Refusal(
            f"the file is only {image.size} bytes, less than one 512-byte disk sector; "
            "upload the whole disk image."
        )


def _check_qed(image: _Image) -> None:
    raise _Refusal(f"QED images are not supported by any service; {CONVERT_HINT}.")


CHECKS = {
    "qcow2": _check_qcow2,
    "raw": _check_raw,
    "vmdk": _check_vmdk,
    "vhd": _check_vhd,
    "vhdx": _check_vhdx,
    "iso": _check_iso,
    "qed": _check_qed,
}
