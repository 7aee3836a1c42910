# A bounded ring of readings in a file on flash: survives resets and power cuts, replays in order.
# Fixed-size slots, so the file never grows and a write touches one slot and the header.
import struct

MAGIC = b"CERB"
HEADER = "!4sHHII"  # magic, slot size, slots, first (oldest) slot, count
HEADER_SIZE = struct.calcsize(HEADER)


class RingBuffer:
    def __init__(self, path, slots, slot_size):
        self.path = path
        self.slots, self.slot_size = slots, slot_size
        self.first = self.count = 0
        self.dropped = 0
        try:
            with open(path, "rb") as f:
                magic, size, n, first, count = struct.unpack(HEADER, f.read(HEADER_SIZE))
            if magic == MAGIC and size == slot_size and n == slots and first < slots and count <= slots:
                self.first, self.count = first, count
                return
        except (OSError, ValueError):
            pass
        self._create()

    def _create(self):
        with open(self.path, "wb") as f:
            f.write(struct.pack(HEADER, MAGIC, self.slot_size, self.slots, 0, 0))
            blank = bytes(self.slot_size)
            for _ in range(self.slots):
                f.write(blank)
        self.first = self.count = 0

    def _header(self, f):
        f.seek(0)
        f.write(struct.pack(HEADER, MAGIC, self.slot_size, self.slots, self.first, self.count))

    def append(self, data):
        """Store one reading; when full the oldest is overwritten (and counted)."""
        if len(data) > self.slot_size - 2:
            return False
        with open(self.path, "r+b") as f:
            index = (self.first + self.count) % self.slots
            f.seek(HEADER_SIZE + index * self.slot_size)
            f.write(struct.pack("!H", len(data)) + data)
            if self.count == self.slots:
                self.first = (self.first + 1) % self.slots
                self.dropped += 1
            else:
                self.count += 1
            self._header(f)
        return True

    def peek(self):
        """The oldest reading, or None."""
        if not self.count:
            return None
        with open(self.path, "rb") as f:
            f.seek(HEADER_SIZE + self.first * self.slot_size)
            length = struct.unpack("!H", f.read(2))[0]
            return f.read(length)

    def pop(self):
        if not self.count:
            return
        self.first = (self.first + 1) % self.slots
        self.count -= 1
        with open(self.path, "r+b") as f:
            self._header(f)

    def __len__(self):
        return self.count
