import Foundation
import GRDB
import SyncCore

/// A folder whose contents are unknown (v6-unknown): its marker was missing, a scan found most of
/// its index gone at once, or its index was rebuilt. Paths found missing meanwhile are set aside
/// (`missing_file`), never recorded as deleted, until a peer's version replaces them, the file
/// comes back, or the user confirms the deletions.
extension IndexStore {
    public func contentsUnknown(folder: Int64) throws -> Bool {
        try writer.read { db in
            try Bool.fetchOne(db, sql: "SELECT contents_unknown FROM folder WHERE id = ?", arguments: [folder]) ?? false
        }
    }

    public func setContentsUnknown(_ unknown: Bool, folder: Int64) throws {
        try writer.write { db in
            try db.execute(sql: "UPDATE folder SET contents_unknown = ? WHERE id = ?", arguments: [unknown, folder])
        }
    }

    /// Moves the live entries of `paths` out of the index into `missing_file`, in one transaction:
    /// no tombstone, no sequence, no version — nothing to announce. Returns how many moved.
    @discardableResult
    public func setAside(_ paths: [String], folder: Int64) throws -> Int {
        try writer.write { db in
            let select = try db.cachedStatement(sql: """
                SELECT id, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, version, chunks
                FROM file WHERE folder = ? AND path = ? AND deleted = 0
                """)
            let keep = try db.cachedStatement(sql: """
                INSERT OR REPLACE INTO missing_file (folder, path, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, version, chunks)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            let dropChunks = try db.cachedStatement(sql: "DELETE FROM chunk WHERE file = ?")
            let dropFile = try db.cachedStatement(sql: "DELETE FROM file WHERE id = ?")
            var moved = 0
            for path in paths {
                guard let r = try Row.fetchOne(select, arguments: [folder, path]) else { continue }
                let id: Int64 = r[0]
                try keep.execute(arguments: [folder, path, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9]])
                try dropChunks.execute(arguments: [id])
                try dropFile.execute(arguments: [id])
                moved += 1
            }
            return moved
        }
    }

    /// How many entries are set aside.
    public func missingCount(folder: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM missing_file WHERE folder = ?", arguments: [folder]) ?? 0
        }
    }

    /// Set-aside entries, parents before children (a directory is placed before what it holds),
    /// with the version and chunks the index had. Their `sequence` is 0.
    public func missingEntries(folder: Int64, limit: Int = Int.max) throws -> [FileEntry] {
        try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT path, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, 0, version, 0, chunks
                FROM missing_file WHERE folder = ? ORDER BY length(path), path LIMIT ?
                """, arguments: [folder, Int64(min(limit, Int(Int64.max)))]).map(Self.entry)
        }
    }

    /// The user confirmed (`syncd accept-deletions`): every set-aside path for which
    /// `isStillMissing` holds is recorded as deleted — a tombstone whose version follows the one
    /// set aside, with a new sequence, announced like any deletion. Paths that are back on disk
    /// stay set aside for the next scan to record. Leaves the unknown state. Returns how many
    /// deletions were recorded.
    @discardableResult
    public func acceptMissingAsDeleted(folder: Int64, device: ShortDeviceID,
                                       isStillMissing: (String) -> Bool) throws -> Int {
        try writer.write { db in
            var sequence = try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0
            let rows = try Row.fetchAll(db, sql: """
                SELECT path, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, version FROM missing_file
                WHERE folder = ? ORDER BY length(path) DESC, path
                """, arguments: [folder])
            let upsert = try db.cachedStatement(sql: Self.upsertFileSQL)
            let hasRow = try db.cachedStatement(sql: "SELECT 1 FROM file WHERE folder = ? AND path = ?")
            let drop = try db.cachedStatement(sql: "DELETE FROM missing_file WHERE folder = ? AND path = ?")
            var recorded = 0
            for r in rows {
                let path: String = r[0]
                if try Bool.fetchOne(hasRow, arguments: [folder, path]) == true {
                    try drop.execute(arguments: [folder, path])   // settled already
                    continue
                }
                guard isStillMissing(path) else { continue }
                let m = Self.metadata(r, from: 1)
                let version = (VersionVector(encoded: [UInt8](r[8] as Data)) ?? VersionVector()).incremented(by: device, now: IndexStore.counterClock())
                sequence += 1
                _ = try Int64.fetchOne(upsert, arguments: [
                    folder, path, Int64(m.kind.rawValue), m.size, Int64(m.mode), m.mtimeNs, m.ctimeNs,
                    Int64(bitPattern: m.inode), m.symlinkTarget, true, Data(version.encoded), sequence,
                    Data(ChunkListCodec.encode([]))])
                try drop.execute(arguments: [folder, path])
                recorded += 1
            }
            try db.execute(sql: "UPDATE folder SET sequence = ?, contents_unknown = 0 WHERE id = ?", arguments: [sequence, folder])
            return recorded
        }
    }

    /// Live entries of the folder (every kind): what "most of the index" is measured against.
    public func liveCount(folder: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM file WHERE folder = ? AND deleted = 0", arguments: [folder]) ?? 0
        }
    }
}

/// `syncd daemon --rebuild-index`: what was done, for the daemon to tell the user.
public struct IndexRebuild: Sendable {
    /// Where the old index (and its -wal and -shm files) now is.
    public var keptAs: String?
    /// Folders re-added from the old index's folder table (each starts with unknown contents).
    public var folders: [String] = []
    /// Why the old folder table could not be read (the user must `syncd add` each folder again).
    public var unreadable: String?
    /// Folders whose row was unusable (path and reason).
    public var skipped: [String] = []
}

extension IndexStore {
    /// Moves the index at `path` aside (`index.db.damaged-<time>` with its -wal and -shm, or
    /// `.replaced-` when it was readable), creates a new one, and re-adds every folder the old
    /// folder table still yields (path, secret…) with unknown contents: nothing is announced as
    /// deleted, local files are scanned as candidates and the rest comes from peers. The old file
    /// itself is only read (through a copy), never written. `isUsableSecret` vets each stored secret.
    public static func rebuild(at path: String, now: Date = Date(),
                               isUsableSecret: (String) -> Bool) throws -> (IndexStore, IndexRebuild) {
        var report = IndexRebuild()
        let fm = FileManager.default
        var old: [FolderRecord]?
        if fm.fileExists(atPath: path) {
            let inspected = inspect(path)
            let kept = path + (inspected.damaged ? ".damaged-" : ".replaced-") + UTCStamp.compact(now)
            for suffix in ["-wal", "-shm"] where fm.fileExists(atPath: path + suffix) {
                try fm.moveItem(atPath: path + suffix, toPath: kept + suffix)
            }
            try fm.moveItem(atPath: path, toPath: kept)
            report.keptAs = kept
            switch inspected.folders {
            case .success(let records): old = records
            case .failure(let error): report.unreadable = "\(error)"
            }
        }
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd >= 0 { close(fd) }
        let store = try IndexStore(path: path)
        for r in old ?? [] {
            guard isUsableSecret(r.secret) else { report.skipped.append("\(r.path): its stored secret is unreadable"); continue }
            do {
                let added = try store.addFolder(path: r.path, folderID: r.folderID, access: r.access, secret: r.secret,
                                                chunkerVersion: r.chunkerVersion)
                try store.setContentsUnknown(true, folder: added.id)
                report.folders.append(r.path)
            } catch {
                report.skipped.append("\(r.path): \(error)")
            }
        }
        return (store, report)
    }

    /// Whether the index at `path` is damaged, and its folder table if that can still be read —
    /// both from a private copy, so the file itself stays exactly as it was.
    static func inspect(_ path: String) -> (damaged: Bool, folders: Result<[FolderRecord], Error>) {
        let fm = FileManager.default
        let dir = NSTemporaryDirectory() + "syncd-rebuild-\(UUID().uuidString.prefix(8))"
        defer { try? fm.removeItem(atPath: dir) }
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            try fm.copyItem(atPath: path, toPath: dir + "/index.db")
            if fm.fileExists(atPath: path + "-wal") { try fm.copyItem(atPath: path + "-wal", toPath: dir + "/index.db-wal") }
        } catch {
            return (true, .failure(error))
        }
        let queue: DatabaseQueue
        do { queue = try DatabaseQueue(path: dir + "/index.db") } catch { return (true, .failure(error)) }
        let damaged = (try? queue.read { try String.fetchAll($0, sql: "PRAGMA quick_check") }) != ["ok"]
        return (damaged, Result {
            try queue.read { db in
                try Row.fetchAll(db, sql: "SELECT id, path, folder_id, access, secret, chunker_version FROM folder ORDER BY id").map {
                    FolderRecord(id: $0[0], path: $0[1], folderID: $0[2], access: $0[3], secret: $0[4],
                                 chunkerVersion: $0[5], sequence: 0)
                }
            }
        })
    }
}

/// `20250101T120000Z`: a file-name-safe UTC time.
enum UTCStamp {
    static func compact(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
    }
}
