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
VMDK_MAX_DESCRIPTOR = MiB
VMDK_SPARSE_TYPES = ("monolithicSparse", "streamOptimized")
VMDK_EXTENT = re.compile(r'^(RW|RDONLY|NOACCESS)\s+(\d+)\s+(\S+)(?:\s+"([^"]*)")?')
VMDK_SETTING = re.compile(r'^([A-Za-z0-9_.]+)\s*=\s*"?([^"]*)"?\s*$')

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

VMDK_ONE_FILE_HINT = (
    "convert it to one file with `qemu-img convert -O vmdk -o subformat=streamOptimized <file> <new file>` "
    "and upload the result"
)


def _check_vmdk(image: _Image) -> None:
    magic = image.read(0, 4)
    if magic == b"COWD":
        raise _Refusal(f"VMDK version 3 (COWD) images are not supported; {CONVERT_HINT}.")
    if magic != b"KDMV":
        _check_vmdk_descriptor_file(image)
        return
    header = image.header(0, 72, "VMDK sparse header")
    (
        _magic,
        version,
        _flags,
        capacity,
        grain_size,
        descriptor_offset,
        descriptor_size,
        entries_per_table,
        redundant_directory,
        directory,
        _overhead,
    ) = struct.unpack("<4sIIQQQQIQQQ", header)
    image.virtual_size = capacity * SECTOR
    if version not in (1, 2, 3):
        raise _Refusal(f"VMDK sparse version {version} is not supported; {CONVERT_HINT}.")
    if capacity == 0:
        # qemu then reads the disk from the extents of the embedded descriptor, which may be other files.
        raise _Refusal(
            f"VMDK header has capacity 0, so its data would come from other files; {CONVERT_HINT}."
        )
    if grain_size == 0 or grain_size & (grain_size - 1) or entries_per_table == 0:
        raise _Refusal(f"VMDK header has an invalid grain size or grain table size; {REUPLOAD_HINT}.")
    if directory == VMDK_GD_AT_END:
        # streamOptimized written as a stream: the real header is the footer before the end-of-stream marker.
        footer = (
            image.header(image.size - 2 * SECTOR, 72, "VMDK stream footer")
            if image.size >= 2 * SECTOR
            else b""
        )
        if not footer.startswith(b"KDMV"):
            raise _Refusal(f"streamOptimized VMDK ends without its footer; {REUPLOAD_HINT}.")
        redundant_directory, directory = struct.unpack("<QQ", footer[48:64])
    sectors_per_table = grain_size * entries_per_table
    directory_bytes = (capacity + sectors_per_table - 1) // sectors_per_table * 4
    image.require_inside(directory * SECTOR, directory_bytes, "VMDK grain directory")
    if redundant_directory:
        image.require_inside(redundant_directory * SECTOR, directory_bytes, "VMDK redundant grain directory")

    if descriptor_offset == 0 or descriptor_size == 0:
        raise _Refusal(
            "VMDK sparse file has no embedded descriptor, so it is one extent of a split disk; "
            f"{VMDK_ONE_FILE_HINT}."
        )
    if descriptor_size * SECTOR > VMDK_MAX_DESCRIPTOR:
        raise _Refusal(
            f"VMDK embedded descriptor is larger than 1 MiB, which no tool writes; {REUPLOAD_HINT}."
        )
    image.require_inside(descriptor_offset * SECTOR, descriptor_size * SECTOR, "VMDK embedded descriptor")
    text = image.read(descriptor_offset * SECTOR, descriptor_size * SECTOR).split(b"\0", 1)[0]
    settings, extents = _parse_vmdk_descriptor(text)
    if "parentFileNameHint" in settings:
        raise _Refusal(
            "VMDK image has a parent (backing file) "
            f"'{_printable(settings['parentFileNameHint'].encode())}'; {CONVERT_HINT}."
        )
    create_type = settings.get("createType", "")
    if create_type not in VMDK_SPARSE_TYPES:
        raise _Refusal(
            f"VMDK createType '{_printable(create_type.encode())}' is not accepted "
            f"(only monolithicSparse and streamOptimized); {VMDK_ONE_FILE_HINT}."
        )
    if len(extents) != 1 or extents[0][2] != "SPARSE":
        described = ", ".join(
            f"{kind} '{_printable(name.encode())}'" for _access, _sectors, kind, name in extents
        )
        raise _Refusal(
            f"VMDK embedded descriptor names another file ({described or 'no extent'}); "
            f"only one SPARSE extent inside the file is accepted, {VMDK_ONE_FILE_HINT}."
        )


def _check_vmdk_descriptor_file(image: _Image) -> None:
    settings, extents = _parse_vmdk_descriptor(image.read(0, 64 * KiB))
    image.virtual_size = sum(sectors for _access, sectors, _kind, _name in extents) * SECTOR or None
    names = ", ".join(f"'{_printable(name.encode())}'" for _access, _sectors, _kind, name in extents if name)
    raise _Refusal(
        f"VMDK descriptor file ({settings.get('createType', 'no createType')}) keeps the disk's data in "
        f"other files ({names or 'none named'}), extents outside the file; {VMDK_ONE_FILE_HINT}."
    )


def _parse_vmdk_descriptor(raw: bytes) -> tuple[dict[str, str], list[tuple[str, int, str, str]]]:
    """Settings (`key = "value"`) and extents (access, sectors, type, file name) of a descriptor text."""
    settings: dict[str, str] = {}
    extents: list[tuple[str, int, str, str]] = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        extent = VMDK_EXTENT.match(line)
        if extent:
            access, sectors, kind, name = extent.groups()
            extents.append((access, int(sectors), kind, name or ""))
            continue
        setting = VMDK_SETTING.match(line)
        if setting:
            settings.setdefault(setting.group(1), setting.group(2))
    return settings, extents


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
