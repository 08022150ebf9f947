import SyncCore

/// `name.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` (Docs/UserGuide.md): the losing version of a
/// conflict, named from its own mtime (UTC) and the device that last changed it — so every peer
/// that resolves the same conflict picks the same name and the copies converge too.
enum ConflictName {
    /// DEVICE is the device whose change made `loser` concurrent with `winner` — a counter of the
    /// loser's vector above the winner's — so two losing edits never share a name.
    static func make(for path: String, loser: FileEntry, winner: VersionVector? = nil) -> String {
        let parent = RelativePath.parent(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        let (stem, ext) = split(base)
        let own = loser.version.counters.filter { c in c.value > (winner?.counters.first { $0.device == c.device }?.value ?? 0) }
        let candidates = own.isEmpty ? loser.version.counters : own
        let device = candidates.max { ($0.value, $0.device) < ($1.value, $1.device) }?.device ?? 0
        let tag = String(String(device, radix: 36).uppercased().suffix(7))
        let name = "\(stem).sync-conflict-\(timestamp(loser.metadata.mtimeNs))-\(tag)\(ext)"
        return RelativePath.join(parent, name)
    }

    /// "notes.txt" → ("notes", ".txt"); ".bashrc" → (".bashrc", ""); "a.tar.gz" → ("a.tar", ".gz").
    static func split(_ base: String) -> (String, String) {
        guard let dot = base.lastIndex(of: "."), dot != base.startIndex else { return (base, "") }
        return (String(base[..<dot]), String(base[dot...]))
    }

    /// YYYYMMDD-HHMMSS in UTC from Unix nanoseconds (civil-from-days, Howard Hinnant's algorithm).
    static func timestamp(_ ns: Int64) -> String {
        let seconds = ns >= 0 ? ns / 1_000_000_000 : (ns - 999_999_999) / 1_000_000_000
        var days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secondOfDay = seconds - days * 86400
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(year)\(two(month))\(two(day))-\(two(secondOfDay / 3600))\(two(secondOfDay % 3600 / 60))\(two(secondOfDay % 60))"
    }
}
