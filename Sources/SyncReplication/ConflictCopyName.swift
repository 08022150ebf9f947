import SyncCore

/// The name a losing version is kept under: `name.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext`.
///
/// Every part comes from the loser's own entry, never from the local device or clock, so every
/// peer that resolves the same conflict picks the same name and the copies they make converge
/// (same name, same content: `GlobalState` merges them instead of conflicting again).
///
/// - `YYYYMMDD-HHMMSS`: the loser's mtime in UTC, whole seconds rounded down.
/// - `DEVICE`: the first 7 characters of the loser's modifying device (`modifier(of:)`) in
///   uppercase RFC 4648 base32 of its 8 big-endian bytes — the same 7 characters that start the
///   printed device id (`MFZWI3D-…`), so a user can tell whose edit it was from `syncd peers`.
/// - `.ext`: the last extension of the base name, absent when there is none; a leading dot does
///   not start an extension (`.bashrc` has none), and `a.tar.gz` keeps `.gz`.
public enum ConflictCopyName {
    public static let marker = ".sync-conflict-"
    /// Longest file name (one path component) Linux file systems accept, in bytes.
    public static let maxComponentBytes = 255

    /// The copy name for `loser` kept beside `path`, in the same directory; nil only when no
    /// name fits in one path component (an extension longer than ~215 bytes). With `winner`,
    /// DEVICE is the device whose change made the loser concurrent with the winner (see `author`).
    /// `path` and the result are path text (`RelativePath`); the limit counts the name's bytes.
    public static func make(for path: String, loser: FileEntry, winner: VersionVector? = nil) -> String? {
        let parent = RelativePath.parent(of: path)
        let (stemText, ext) = split(baseName(of: path))
        let device = winner.map { author(of: loser.version, against: $0) } ?? modifier(of: loser.version)
        let tag = marker + UTCTimestamp.compact(loser.metadata.mtimeNs) + "-" + deviceTag(device)
        var stem = bytes(stemText)
        let fixed = tag.utf8.count + bytes(ext).count
        // Trim the stem, a whole UTF-8 sequence at a time, until the name fits one component.
        while stem.count + fixed > maxComponentBytes {
            guard !stem.isEmpty else { return nil }
            var dropped = 0
            while let last = stem.popLast() {   // a continuation byte (10xxxxxx) takes its lead along
                dropped += 1
                if last & 0xC0 != 0x80 || dropped == 4 { break }
            }
        }
        return RelativePath.join(parent, RelativePath.text(fromBytes: stem) + tag + ext)
    }

    /// The bytes a path text stands for; a string that is not path text (a bug upstream) as UTF-8.
    private static func bytes(_ text: String) -> [UInt8] {
        RelativePath.bytes(text) ?? Array(text.utf8)
    }

    /// "notes.txt" → ("notes", ".txt"); ".bashrc" → (".bashrc", ""); "a.tar.gz" → ("a.tar", ".gz").
    /// On path text the '.' is the byte: an escape never spells it.
    public static func split(_ base: String) -> (stem: String, ext: String) {
        guard let dot = base.utf8.lastIndex(of: UInt8(ascii: ".")), dot != base.startIndex else { return (base, "") }
        return (String(base[..<dot]), String(base[dot...]))
    }

    /// The device that made the latest change in `version`: the one with the highest counter
    /// (counters follow a clock floor, see `VersionVector.incremented`), ties to the larger id.
    /// 0 for an empty vector.
    public static func modifier(of version: VersionVector) -> ShortDeviceID {
        version.counters.max { ($0.value, $0.device) < ($1.value, $1.device) }?.device ?? 0
    }

    /// The device behind `loser`'s divergence from `winner`: among the loser's counters that are
    /// above the winner's, the highest (ties to the larger id); `modifier(of:)` when none is.
    /// Counters are plain per-device counts, so the highest counter alone can name a device that
    /// only made the common ancestor: three devices editing `{A:1}` at once give `{A:1,B:1}` and
    /// `{A:1,C:1}`, whose authors are B and C, not A.
    public static func author(of loser: VersionVector, against winner: VersionVector) -> ShortDeviceID {
        let own = loser.counters.filter { $0.value > winner.value(for: $0.device) }
        return own.max { ($0.value, $0.device) < ($1.value, $1.device) }?.device ?? modifier(of: loser)
    }

    /// First 7 base32 characters of the device's 8 big-endian bytes (35 of its 64 bits).
    public static func deviceTag(_ device: ShortDeviceID) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)
        let chars = (0..<7).map { i in alphabet[Int((device >> UInt64(59 - 5 * i)) & 31)] }
        return String(decoding: chars, as: UTF8.self)
    }

    /// The path a conflict copy was made for, or nil when `path` is not a conflict copy. Also
    /// accepts the ` 2`, ` 3`… suffix the daemon adds before the extension when a name is taken.
    public static func original(of path: String) -> String? {
        let parent = RelativePath.parent(of: path)
        let base = Array(baseName(of: path).utf8)
        let mark = Array(marker.utf8)
        guard base.count > mark.count, let at = lastRange(of: mark, in: base), at > 0 else { return nil }
        // YYYYMMDD-HHMMSS-DEVICE: 8 digits, dash, 6 digits, dash, 7 base32 characters.
        let shape = Array("dddddddd-dddddd-bbbbbbb".utf8)
        var i = at + mark.count
        guard base.count >= i + shape.count else { return nil }
        for kind in shape {
            let c = base[i]
            switch kind {
            case UInt8(ascii: "d"): guard isDigit(c) else { return nil }
            case UInt8(ascii: "b"): guard isBase32(c) else { return nil }
            default: guard c == kind else { return nil }
            }
            i += 1
        }
        if i < base.count, base[i] == UInt8(ascii: " ") {   // " 2" from a taken name
            var j = i + 1
            while j < base.count, isDigit(base[j]) { j += 1 }
            if j > i + 1 { i = j }
        }
        let rest = base[i...]
        guard rest.isEmpty || rest.first == UInt8(ascii: ".") else { return nil }
        let originalBase = String(decoding: base[..<at] + rest, as: UTF8.self)
        return RelativePath.join(parent, originalBase)
    }

    /// "a/b/c.txt" → "c.txt".
    static func baseName(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }

    private static func lastRange(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        var start = haystack.count - needle.count
        while start >= 0 {
            if haystack[start..<start + needle.count].elementsEqual(needle) { return start }
            start -= 1
        }
        return nil
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    private static func isBase32(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) || (c >= UInt8(ascii: "2") && c <= UInt8(ascii: "7"))
    }
}

/// Civil UTC time from Unix nanoseconds without Foundation (Howard Hinnant's `civil_from_days`,
/// exact for the whole proleptic Gregorian calendar, leap years included).
public enum UTCTimestamp {
    public struct Civil: Hashable, Sendable {
        public var year: Int64, month: Int64, day: Int64, hour: Int64, minute: Int64, second: Int64
    }

    public static func civil(_ ns: Int64) -> Civil {
        let seconds = floorDivide(ns, 1_000_000_000)
        let days = floorDivide(seconds, 86_400)
        let secondOfDay = seconds - days * 86_400
        // Shift the epoch to 0000-03-01 so the leap day is the last day of its year.
        let shifted = days + 719_468
        let era = floorDivide(shifted, 146_097)
        let dayOfEra = shifted - era * 146_097                                            // [0, 146096]
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)    // [0, 365]
        let mp = (5 * dayOfYear + 2) / 153                                                // March = 0
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return Civil(year: year, month: month, day: day, hour: secondOfDay / 3600,
                     minute: secondOfDay % 3600 / 60, second: secondOfDay % 60)
    }

    /// `YYYYMMDD-HHMMSS`.
    public static func compact(_ ns: Int64) -> String {
        let c = civil(ns)
        return pad(c.year, 4) + pad(c.month, 2) + pad(c.day, 2) + "-" + pad(c.hour, 2) + pad(c.minute, 2)
            + pad(c.second, 2)
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    /// Rounds towards negative infinity, so times before 1970 land on the right day.
    private static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}
