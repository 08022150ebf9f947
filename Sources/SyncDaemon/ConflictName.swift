import SyncCore
import SyncReplication

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

    static func split(_ base: String) -> (String, String) {
        let parts = ConflictCopyName.split(base)
        return (parts.stem, parts.ext)
    }

    /// YYYYMMDD-HHMMSS in UTC from Unix nanoseconds.
    static func timestamp(_ ns: Int64) -> String { UTCTimestamp.compact(ns) }
}
