import Foundation
import GRDB
import SyncCore

/// A folder this device shares, as recorded in the index.
public struct FolderRecord: Sendable, Equatable {
    public var id: Int64
    public var path: String
    public var folderID: String
    public var access: String
    public var secret: String
    public var chunkerVersion: Int
    public var sequence: Int64
}

public struct FolderStats: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var bytes: Int64 = 0
    public var deleted = 0
    public var sequence: Int64 = 0

    public init(files: Int = 0, directories: Int = 0, symlinks: Int = 0, bytes: Int64 = 0, deleted: Int = 0, sequence: Int64 = 0) {
        self.files = files; self.directories = directories; self.symlinks = symlinks
        self.bytes = bytes; self.deleted = deleted; self.sequence = sequence
    }
}

/// Where a chunk's bytes can be read locally.
public struct ChunkLocation: Sendable, Equatable {
    public var folderPath: String
    public var path: String
    public var offset: Int64
}

public enum StoreError: Error, Equatable, CustomStringConvertible {
    case folderPathTaken(String)
    case folderIDTaken(String)
    case noSuchFolder(String)
    /// The index file is not a database, or fails SQLite's own check.
    case damaged(String, String)

    public var description: String {
        switch self {
        case .damaged(let path, let why):
            return "the index \(path) is damaged (\(why)). Nothing was changed. To rebuild it from the folders on disk "
                + "and from peers (nothing is deleted on peers; the damaged file is kept beside it), run: syncd daemon --rebuild-index"
        case .folderPathTaken(let p): return "\(p) is already a shared folder"
        case .folderIDTaken(let p): return "this secret's folder is already shared at \(p)"
        case .noSuchFolder(let p): return "\(p) is not a shared folder"
        }
    }
}

/// The one façade over the SQLite index (WAL, STRICT tables, frozen migrations).
/// Every method is one transaction; methods are named for intent, not for tables.
public struct IndexStore: Sendable {
    let writer: any DatabaseWriter

    /// Opens (creating if needed) the index at `path` in WAL mode and runs pending migrations.
    public init(path: String) throws {
        try self.init(path: path, migratingUpTo: nil)
    }

    /// Runs migrations only up to `last` (nil: all): tests make indexes as older versions did.
    init(path: String, migratingUpTo last: String?) throws {
        var config = Configuration()
        config.prepareDatabase { db in
            // WAL + NORMAL: a crash (kill -9) never corrupts or tears a transaction; only a power
            // loss may drop the last commits, which the next scan re-derives from the disk.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // 16 MiB page cache: the chunk map's random keys otherwise thrash the 2 MiB default.
            try db.execute(sql: "PRAGMA cache_size = -16384")
        }
        do {
            // A damaged file is refused before anything is written to it: checked through a
            // read-only connection, which never checkpoints the WAL into it.
            if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size > 0 {
                var readOnly = Configuration()
                readOnly.readonly = true
                let check = try DatabaseQueue(path: path, configuration: readOnly).read {
                    try String.fetchAll($0, sql: "PRAGMA quick_check")
                }
                guard check == ["ok"] else { throw StoreError.damaged(path, check.prefix(3).joined(separator: "; ")) }
            }
            let pool = try DatabasePool(path: path, configuration: config)
            if let last { try IndexSchema.migrator.migrate(pool, upTo: last) } else { try IndexSchema.migrator.migrate(pool) }
            writer = pool
        } catch let error as DatabaseError where [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains(error.resultCode) {
            throw StoreError.damaged(path, error.message ?? "\(error.resultCode)")
        }
    }

    /// A private in-memory index, for tests.
    public static func inMemory() throws -> IndexStore {
        try IndexStore(writer: DatabaseQueue())
    }

    private init(writer: any DatabaseWriter) throws {
        try IndexSchema.migrator.migrate(writer)
        self.writer = writer
    }

    // MARK: folders

    public func addFolder(path: String, folderID: String, access: String, secret: String,
                          chunkerVersion: Int) throws -> FolderRecord {
        try writer.write { db in
            if let other = try String.fetchOne(db, sql: "SELECT path FROM folder WHERE folder_id = ?", arguments: [folderID]) {
                throw StoreError.folderIDTaken(other)
            }
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM folder WHERE path = ?", arguments: [path]) == true {
                throw StoreError.folderPathTaken(path)
            }
            try db.execute(sql: """
                INSERT INTO folder (path, folder_id, access, secret, chunker_version, created_ns, index_id)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [path, folderID, access, secret, chunkerVersion,
                                 Int64(Date().timeIntervalSince1970 * 1e9), Int64.random(in: 1...Int64.max)])
            return FolderRecord(id: db.lastInsertedRowID, path: path, folderID: folderID, access: access,
                                secret: secret, chunkerVersion: chunkerVersion, sequence: 0)
        }
    }

    /// Forgets a folder and its whole index (the files on disk are not touched).
    public func removeFolder(id: Int64) throws {
        try writer.write { db in
            try db.execute(sql: "DELETE FROM chunk WHERE file IN (SELECT id FROM file WHERE folder = ?)", arguments: [id])
            try db.execute(sql: "DELETE FROM file WHERE folder = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM remote_manifest WHERE folder = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM missing_file WHERE folder = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM folder WHERE id = ?", arguments: [id])
        }
    }

    public func folders() throws -> [FolderRecord] {
        try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT id, path, folder_id, access, secret, chunker_version, sequence FROM folder ORDER BY id")
                .map { FolderRecord(id: $0[0], path: $0[1], folderID: $0[2], access: $0[3], secret: $0[4],
                                    chunkerVersion: $0[5], sequence: $0[6]) }
        }
    }

    /// Bytes of live files changed after `sequence`: what a peer at that sequence still has to fetch.
    public func bytesAfter(folder: Int64, sequence: Int64) throws -> Int64 {
        try writer.read { db in
            try Int64.fetchOne(db, sql: "SELECT coalesce(sum(size), 0) FROM file WHERE folder = ? AND sequence > ? AND deleted = 0 AND kind = 0",
                               arguments: [folder, sequence]) ?? 0
        }
    }

    /// The id of this lifetime of the folder's local index (v3).
    public func indexID(folder: Int64) throws -> UInt64 {
        try writer.read { db in
            UInt64(bitPattern: try Int64.fetchOne(db, sql: "SELECT index_id FROM folder WHERE id = ?", arguments: [folder]) ?? 0)
        }
    }

    /// Every live (not deleted) path with its encoded version vector, and the folder sequence they
    /// were read at (one read transaction): what the anti-entropy digest is computed over.
    public func liveVersions(folder: Int64) throws -> (sequence: Int64, entries: [(path: String, version: [UInt8])]) {
        try writer.read { db in
            let sequence = try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0
            let rows = try Row.fetchCursor(db, sql: "SELECT path, version FROM file WHERE folder = ? AND deleted = 0", arguments: [folder])
            var out: [(path: String, version: [UInt8])] = []
            while let row = try rows.next() { out.append((row[0], [UInt8](row[1] as Data))) }
            return (sequence, out)
        }
    }

    /// The folder's local sequence (cheap: one row), polled for gossip announcements.
    public func sequence(folder: Int64) throws -> Int64 {
        try writer.read { db in try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0 }
    }

    // MARK: sealed manifests from peers

    /// How far each origin's index has come in the manifests we hold: per origin, the index id and
    /// last sequence of the newest manifest stored (the rollback/replay floor).
    public func remoteManifestProgress(folder: Int64) throws -> [UInt64: (indexID: UInt64, lastSequence: UInt64)] {
        try writer.read { db in
            var out: [UInt64: (indexID: UInt64, lastSequence: UInt64)] = [:]
            let rows = try Row.fetchAll(db, sql: """
                SELECT origin, index_id, last_sequence FROM remote_manifest WHERE folder = ? ORDER BY received_ns, rowid
                """, arguments: [folder])
            for row in rows {
                let origin = UInt64(bitPattern: row[0]), indexID = UInt64(bitPattern: row[1])
                let last = UInt64(bitPattern: row[2])
                if let p = out[origin], p.indexID == indexID, p.lastSequence > last { continue }
                out[origin] = (indexID, last)
            }
            return out
        }
    }

    /// Keeps a verified sealed manifest (idempotent for the same origin, index and sequence).
    public func storeRemoteManifest(folder: Int64, origin: UInt64, indexID: UInt64, firstSequence: UInt64,
                                    lastSequence: UInt64, sealed: [UInt8]) throws {
        try writer.write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO remote_manifest (folder, origin, index_id, first_sequence, last_sequence, sealed, received_ns)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [folder, Int64(bitPattern: origin), Int64(bitPattern: indexID), Int64(bitPattern: firstSequence),
                                 Int64(bitPattern: lastSequence), Data(sealed), Int64(Date().timeIntervalSince1970 * 1e9)])
        }
    }

    /// Every stored sealed manifest of the folder, oldest first: what a storage peer relays.
    public func remoteManifests(folder: Int64) throws -> [(origin: UInt64, indexID: UInt64, lastSequence: UInt64, sealed: [UInt8])] {
        try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT origin, index_id, last_sequence, sealed FROM remote_manifest WHERE folder = ? ORDER BY received_ns, rowid
                """, arguments: [folder]).map { r in
                (UInt64(bitPattern: r[0]), UInt64(bitPattern: r[1]), UInt64(bitPattern: r[2]), [UInt8](r[3] as Data))
            }
        }
    }

    // MARK: chunk-list pieces

    /// Keeps pieces of chunk lists by their keyed id (idempotent).
    public func storePieces(_ pieces: [(id: ChunkID, bytes: [UInt8])], folder: Int64) throws {
        guard !pieces.isEmpty else { return }
        try writer.write { db in
            let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO list_piece (folder, id, bytes) VALUES (?, ?, ?)")
            for p in pieces { try insert.execute(arguments: [folder, Data(p.id.bytes), Data(p.bytes)]) }
        }
    }

    /// The pieces of `ids` this folder holds.
    public func pieces(_ ids: [ChunkID], folder: Int64) throws -> [ChunkID: [UInt8]] {
        try writer.read { db in
            let select = try db.cachedStatement(sql: "SELECT bytes FROM list_piece WHERE folder = ? AND id = ?")
            var out: [ChunkID: [UInt8]] = [:]
            for id in Set(ids) {
                if let data = try Data.fetchOne(select, arguments: [folder, Data(id.bytes)]) { out[id] = [UInt8](data) }
            }
            return out
        }
    }

    /// The chunk lists of live files with more than `chunks` chunks: the ones sent as pieces.
    public func chunkLists(folder: Int64, longerThan chunks: Int) throws -> [[ChunkRef]] {
        try writer.read { db in
            try Data.fetchAll(db, sql: """
                SELECT chunks FROM file WHERE folder = ? AND deleted = 0 AND length(chunks) > ?
                """, arguments: [folder, chunks * ChunkListCodec.entrySize]).compactMap { ChunkListCodec.decode([UInt8]($0)) }
        }
    }

    /// Forgets the folder's pieces whose id is not in `keep`; returns how many went.
    @discardableResult
    public func prunePieces(keeping keep: Set<ChunkID>, folder: Int64) throws -> Int {
        try writer.write { db in
            let stale = try Data.fetchAll(db, sql: "SELECT id FROM list_piece WHERE folder = ?", arguments: [folder])
                .filter { ChunkID(bytes: [UInt8]($0)).map { !keep.contains($0) } ?? true }
            let delete = try db.cachedStatement(sql: "DELETE FROM list_piece WHERE folder = ? AND id = ?")
            for id in stale { try delete.execute(arguments: [folder, id]) }
            return stale.count
        }
    }

    public func remoteManifestCount(folder: Int64) throws -> Int {
        try writer.read { db in
            try Int.fetchOne(db, sql: "SELECT count(*) FROM remote_manifest WHERE folder = ?", arguments: [folder]) ?? 0
        }
    }

    // MARK: files

    /// What the index knows of every path of a folder, for a scan to compare against.
    public func scanSnapshot(folder: Int64) throws -> [String: (metadata: FileMetadata, deleted: Bool)] {
        try writer.read { db in
            var out: [String: (metadata: FileMetadata, deleted: Bool)] = [:]
            let rows = try Row.fetchCursor(db, sql: """
                SELECT path, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, deleted
                FROM file WHERE folder = ?
                """, arguments: [folder])
            while let r = try rows.next() {
                out[r[0]] = (Self.metadata(r, from: 1), r[8])
            }
            return out
        }
    }

    /// One row per path: insert or replace every column, returning the row id.
    static let upsertFileSQL = """
        INSERT INTO file (folder, path, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, deleted, version, sequence, chunks)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (folder, path) DO UPDATE SET kind = excluded.kind, size = excluded.size, mode = excluded.mode,
            mtime_ns = excluded.mtime_ns, ctime_ns = excluded.ctime_ns, inode = excluded.inode,
            symlink_target = excluded.symlink_target, deleted = excluded.deleted, version = excluded.version,
            sequence = excluded.sequence, chunks = excluded.chunks
        RETURNING id
        """

    /// Points the chunk map of file row `id` at `chunks` (offsets are running sums of sizes);
    /// `drop` clears the row's old entries first (nil for a row that has none).
    static func replaceChunkMap(of id: Int64, with chunks: [ChunkRef], drop: Statement?, add: Statement) throws {
        try drop?.execute(arguments: [id])
        var offset: Int64 = 0
        for c in chunks {
            try add.execute(arguments: [Data(c.id.bytes), id, offset])
            offset += Int64(c.size)
        }
    }

    /// Records local changes in one transaction: each real change bumps the folder sequence and
    /// the entry's version vector (by `device`). Returns the folder's sequence afterwards.
    @discardableResult
    /// The clock a local change's counter is at least (milliseconds since 1970): a device's counter
    /// for a path never comes back to a value it issued before, even after a conflict recorded the
    /// winner's vector without our higher counter (found by the replication simulator, seed 9729:
    /// two different versions with one vector compare equal, and never converge).
    public static func counterClock() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }

    /// `now`: the counter floor for this batch (`counterClock()`; tests pass 0 for small counters).
    public func recordLocalChanges(_ changes: [LocalChange], folder: Int64, device: ShortDeviceID,
                                   now: UInt64 = IndexStore.counterClock()) throws -> Int64 {
        try writer.write { db in
            var sequence = try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0
            let lookup = try db.cachedStatement(sql: "SELECT id, version, deleted, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, chunks FROM file WHERE folder = ? AND path = ?")
            let upsert = try db.cachedStatement(sql: Self.upsertFileSQL)
            let dropChunks = try db.cachedStatement(sql: "DELETE FROM chunk WHERE file = ?")
            let addChunk = try db.cachedStatement(sql: "INSERT OR IGNORE INTO chunk (id, file, offset) VALUES (?, ?, ?)")

            // (Tests write through indexes made as older versions left them, before v6-unknown.)
            let setAside = try db.tableExists("missing_file")
            let lookupMissing = try setAside ? db.cachedStatement(sql: "SELECT version, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, chunks FROM missing_file WHERE folder = ? AND path = ?") : nil
            let dropMissing = try setAside ? db.cachedStatement(sql: "DELETE FROM missing_file WHERE folder = ? AND path = ?") : nil

            for change in changes {
                let existing = try Row.fetchOne(lookup, arguments: [folder, change.path])
                var oldVersion = existing.flatMap { VersionVector(encoded: [UInt8]($0[1] as Data)) } ?? VersionVector()
                let wasDeleted: Bool = existing?[2] ?? true
                let metadata: FileMetadata
                let chunks: [ChunkRef]
                let deleted: Bool
                if existing == nil, case .present(_, let m, let c) = change, let lookupMissing, let dropMissing,
                   let missing = try Row.fetchOne(lookupMissing, arguments: [folder, change.path]) {
                    // A path set aside while the folder's contents were unknown is back on disk: it
                    // continues the history it had, and the same content is no new version.
                    try dropMissing.execute(arguments: [folder, change.path])
                    let version = VersionVector(encoded: [UInt8](missing[0] as Data)) ?? VersionVector()
                    if Self.metadata(missing, from: 1).sameContent(as: m), ChunkListCodec.decode([UInt8](missing[8] as Data)) == c {
                        sequence += 1
                        let id = try Int64.fetchOne(upsert, arguments: [
                            folder, change.path, Int64(m.kind.rawValue), m.size, Int64(m.mode), m.mtimeNs, m.ctimeNs,
                            Int64(bitPattern: m.inode), m.symlinkTarget, false, Data(version.encoded), sequence,
                            Data(ChunkListCodec.encode(c))])!
                        try Self.replaceChunkMap(of: id, with: c, drop: nil, add: addChunk)
                        continue
                    }
                    oldVersion = version
                }
                switch change {
                case .present(_, let m, let c):
                    // Metadata-only noise (same content, same bits) is not a new version.
                    if let e = existing, !wasDeleted, Self.metadata(e, from: 3).sameContent(as: m),
                       ChunkListCodec.decode([UInt8](e[10] as Data)) == c {
                        if Self.metadata(e, from: 3) != m { try Self.refreshStat(db, id: e[0], m) }
                        continue
                    }
                    metadata = m; chunks = c; deleted = false
                case .removed:
                    guard let e = existing, !wasDeleted else { continue }
                    metadata = Self.metadata(e, from: 3); chunks = []; deleted = true
                }
                sequence += 1
                let version = oldVersion.incremented(by: device, now: now)
                let id = try Int64.fetchOne(upsert, arguments: [
                    folder, change.path, Int64(metadata.kind.rawValue), metadata.size, Int64(metadata.mode),
                    metadata.mtimeNs, metadata.ctimeNs, Int64(bitPattern: metadata.inode), metadata.symlinkTarget,
                    deleted, Data(version.encoded), sequence, Data(ChunkListCodec.encode(chunks))])!
                try Self.replaceChunkMap(of: id, with: chunks, drop: existing != nil ? dropChunks : nil, add: addChunk)
            }
            try db.execute(sql: "UPDATE folder SET sequence = ? WHERE id = ?", arguments: [sequence, folder])
            return sequence
        }
    }

    /// Records entries applied from a peer, in one transaction: each keeps the peer's version
    /// vector (it is not a new version, so no ping-pong), takes the on-disk stat of what was written
    /// (so the next scan finds it unchanged), and a new local sequence (so it is passed on to other
    /// peers). Returns the folder's sequence afterwards.
    @discardableResult
    public func recordRemoteEntries(_ applied: [(entry: FileEntry, stat: FileMetadata)], folder: Int64) throws -> Int64 {
        try writer.write { db in
            var sequence = try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0
            let upsert = try db.cachedStatement(sql: Self.upsertFileSQL)
            let dropChunks = try db.cachedStatement(sql: "DELETE FROM chunk WHERE file = ?")
            let addChunk = try db.cachedStatement(sql: "INSERT OR IGNORE INTO chunk (id, file, offset) VALUES (?, ?, ?)")
            let dropMissing = try db.tableExists("missing_file") ? db.cachedStatement(sql: "DELETE FROM missing_file WHERE folder = ? AND path = ?") : nil
            for (entry, m) in applied {
                try dropMissing?.execute(arguments: [folder, entry.path])   // pulled back (or settled) from a peer
                sequence += 1
                let chunks = entry.deleted ? [] : entry.chunks
                let id = try Int64.fetchOne(upsert, arguments: [
                    folder, entry.path, Int64(m.kind.rawValue), m.size, Int64(m.mode), m.mtimeNs, m.ctimeNs,
                    Int64(bitPattern: m.inode), m.symlinkTarget, entry.deleted, Data(entry.version.encoded), sequence,
                    Data(ChunkListCodec.encode(chunks))])!
                try Self.replaceChunkMap(of: id, with: chunks, drop: dropChunks, add: addChunk)
            }
            try db.execute(sql: "UPDATE folder SET sequence = ? WHERE id = ?", arguments: [sequence, folder])
            return sequence
        }
    }

    /// Scan-relevant state of one path (nil when the index never saw it).
    public func scanState(folder: Int64, path: String) throws -> (metadata: FileMetadata, deleted: Bool)? {
        try writer.read { db in
            try Row.fetchOne(db, sql: """
                SELECT kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, deleted FROM file
                WHERE folder = ? AND path = ?
                """, arguments: [folder, path]).map { (Self.metadata($0, from: 0), $0[7]) }
        }
    }

    /// Live (not deleted) paths at or below `directory` ("" = the whole folder).
    public func livePaths(folder: Int64, under directory: String) throws -> [String] {
        try writer.read { db in
            if directory.isEmpty {
                return try String.fetchAll(db, sql: "SELECT path FROM file WHERE folder = ? AND deleted = 0", arguments: [folder])
            }
            // Descendants of "d" sort between "d/" and "d0" ('0' follows '/' in byte order).
            return try String.fetchAll(db, sql: """
                SELECT path FROM file WHERE folder = ? AND deleted = 0 AND (path = ? OR (path >= ? AND path < ?))
                """, arguments: [folder, directory, directory + "/", directory + "0"])
        }
    }

    /// Live regular files recorded with inode `inode` (the names of a hard-linked file).
    public func liveFiles(folder: Int64, inode: UInt64) throws -> [String] {
        try writer.read { db in
            try String.fetchAll(db, sql: """
                SELECT path FROM file WHERE folder = ? AND inode = ? AND deleted = 0 AND kind = ?
                """, arguments: [folder, Int64(bitPattern: inode), Int64(FileKind.file.rawValue)])
        }
    }

    public func entry(folder: Int64, path: String) throws -> FileEntry? {
        try writer.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.entryColumns) FROM file WHERE folder = ? AND path = ?",
                             arguments: [folder, path]).map(Self.entry)
        }
    }

    /// Entries changed after `sequence`, oldest first: what a peer that saw `sequence` still needs.
    public func entries(folder: Int64, after sequence: Int64, limit: Int = Int.max) throws -> [FileEntry] {
        try writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.entryColumns) FROM file WHERE folder = ? AND sequence > ? ORDER BY sequence LIMIT ?
                """, arguments: [folder, sequence, Int64(min(limit, Int(Int64.max)))]).map(Self.entry)
        }
    }

    /// Moves everything in the write-ahead log into the database file and empties the log (a clean
    /// stop): `index.db` alone then holds the whole index, for a copy or a backup.
    public func checkpoint() throws {
        try writer.writeWithoutTransaction { try $0.checkpoint(.truncate) }
    }

    public func stats(folder: Int64) throws -> FolderStats {
        try writer.read { db in
            var s = FolderStats()
            s.sequence = try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0
            let rows = try Row.fetchAll(db, sql: """
                SELECT kind, deleted, count(*), total(size) FROM file WHERE folder = ? GROUP BY kind, deleted
                """, arguments: [folder])
            for r in rows {
                let n: Int = r[2]
                if r[1] as Bool { s.deleted += n; continue }
                switch FileKind(rawValue: UInt8(r[0] as Int64)) {
                case .file: s.files += n; s.bytes += Int64(r[3] as Double)
                case .directory: s.directories += n
                case .symlink: s.symlinks += n
                case nil: break
                }
            }
            return s
        }
    }

    /// A local copy of a chunk, if any live file holds it.
    /// The entries of many paths in one read (one prepared statement), for planning a batch.
    public func entries(folder: Int64, paths: [String]) throws -> [String: FileEntry] {
        try writer.read { db in
            let statement = try db.cachedStatement(sql: "SELECT \(Self.entryColumns) FROM file WHERE folder = ? AND path = ?")
            var out: [String: FileEntry] = [:]
            for path in paths {
                if let row = try Row.fetchOne(statement, arguments: [folder, path]) { out[path] = Self.entry(row) }
            }
            return out
        }
    }

    /// Scan-relevant state of many paths in one read (paths the index never saw are absent).
    public func scanStates(folder: Int64, paths: [String]) throws -> [String: (metadata: FileMetadata, deleted: Bool)] {
        try writer.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, deleted FROM file
                WHERE folder = ? AND path = ?
                """)
            var out: [String: (metadata: FileMetadata, deleted: Bool)] = [:]
            for path in paths {
                if let r = try Row.fetchOne(statement, arguments: [folder, path]) { out[path] = (Self.metadata(r, from: 0), r[7]) }
            }
            return out
        }
    }

    /// Where each of `ids` can be read in this folder's files, in one read.
    public func locateChunks(_ ids: [ChunkID], folder: Int64) throws -> [ChunkID: ChunkLocation] {
        try writer.read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT folder.path, file.path, chunk.offset FROM chunk
                JOIN file ON file.id = chunk.file JOIN folder ON folder.id = file.folder
                WHERE chunk.id = ? AND file.folder = ? AND file.deleted = 0 LIMIT 1
                """)
            var out: [ChunkID: ChunkLocation] = [:]
            for id in ids {
                if let r = try Row.fetchOne(statement, arguments: [Data(id.bytes), folder]) {
                    out[id] = ChunkLocation(folderPath: r[0], path: r[1], offset: r[2])
                }
            }
            return out
        }
    }

    /// Where `id` can be read in this folder's files, if anywhere. (Serving a peer calls this once
    /// per chunk: the statement is compiled once, not per call.)
    public func locateChunk(_ id: ChunkID, folder: Int64) throws -> ChunkLocation? {
        try locateChunks([id], folder: folder)[id]
    }

    public func locateChunk(_ id: ChunkID) throws -> ChunkLocation? {
        try writer.read { db in
            try Row.fetchOne(db, sql: """
                SELECT folder.path, file.path, chunk.offset FROM chunk
                JOIN file ON file.id = chunk.file JOIN folder ON folder.id = file.folder
                WHERE chunk.id = ? LIMIT 1
                """, arguments: [Data(id.bytes)]).map { ChunkLocation(folderPath: $0[0], path: $0[1], offset: $0[2]) }
        }
    }

    /// Checks the index's invariants; returns a list of problems (empty when consistent).
    /// Used after crashes in tests, and by `syncd` at start-up to refuse a damaged index.
    public func verify(folder: Int64) throws -> [String] {
        try writer.read { db in
            var problems: [String] = []
            let integrity = try String.fetchAll(db, sql: "PRAGMA integrity_check")
            if integrity != ["ok"] { problems.append("sqlite integrity: \(integrity.joined(separator: "; "))") }
            let sequence = try Int64.fetchOne(db, sql: "SELECT sequence FROM folder WHERE id = ?", arguments: [folder]) ?? 0
            let maxSeq = try Int64.fetchOne(db, sql: "SELECT max(sequence) FROM file WHERE folder = ?", arguments: [folder]) ?? 0
            if maxSeq > sequence { problems.append("file sequence \(maxSeq) above folder sequence \(sequence)") }
            let dupSeq = try Int.fetchOne(db, sql: "SELECT count(*) - count(DISTINCT sequence) FROM file WHERE folder = ?", arguments: [folder]) ?? 0
            if dupSeq != 0 { problems.append("\(dupSeq) duplicate sequence numbers") }
            let rows = try Row.fetchCursor(db, sql: "SELECT id, path, kind, size, deleted, chunks FROM file WHERE folder = ?", arguments: [folder])
            let countChunks = try db.cachedStatement(sql: "SELECT count(*) FROM chunk WHERE file = ?")
            while let r = try rows.next() {
                let path: String = r[1]
                guard let chunks = ChunkListCodec.decode([UInt8](r[5] as Data)) else {
                    problems.append("\(path): undecodable chunk list"); continue
                }
                let isFile = (r[2] as Int64) == Int64(FileKind.file.rawValue) && !(r[4] as Bool)
                let total = chunks.reduce(Int64(0)) { $0 + Int64($1.size) }
                if isFile && total != (r[3] as Int64) { problems.append("\(path): chunks cover \(total) of \(r[3] as Int64) bytes") }
                if !isFile && !chunks.isEmpty { problems.append("\(path): chunks on a non-file entry") }
                let mapped = try Int.fetchOne(countChunks, arguments: [r[0] as Int64]) ?? 0
                if mapped != Set(chunks.enumerated().map { "\($0.element.id)@\($0.offset)" }).count {
                    problems.append("\(path): chunk map has \(mapped) rows for \(chunks.count) chunks")
                }
            }
            return problems
        }
    }

    // MARK: row mapping

    static let entryColumns = "path, kind, size, mode, mtime_ns, ctime_ns, inode, symlink_target, deleted, version, sequence, chunks"

    static func entry(_ r: Row) -> FileEntry {
        FileEntry(path: r[0], metadata: metadata(r, from: 1), deleted: r[8],
                  version: VersionVector(encoded: [UInt8](r[9] as Data)) ?? VersionVector(),
                  sequence: r[10], chunks: ChunkListCodec.decode([UInt8](r[11] as Data)) ?? [])
    }

    /// Reads kind, size, mode, mtime, ctime, inode, symlink target starting at column `i`.
    static func metadata(_ r: Row, from i: Int) -> FileMetadata {
        FileMetadata(kind: FileKind(rawValue: UInt8(r[i] as Int64)) ?? .file, size: r[i + 1],
                     mode: UInt32(truncatingIfNeeded: r[i + 2] as Int64), mtimeNs: r[i + 3], ctimeNs: r[i + 4],
                     inode: UInt64(bitPattern: r[i + 5] as Int64), symlinkTarget: r[i + 6])
    }

    private static func refreshStat(_ db: Database, id: Int64, _ m: FileMetadata) throws {
        try db.execute(sql: "UPDATE file SET mtime_ns = ?, ctime_ns = ?, inode = ? WHERE id = ?",
                       arguments: [m.mtimeNs, m.ctimeNs, Int64(bitPattern: m.inode), id])
    }
}

extension FileMetadata {
    /// Same content and same synced attributes (kind, size, mode, mtime, link target); ctime and
    /// inode are local-only and do not make a new version.
    func sameContent(as other: FileMetadata) -> Bool {
        if kind == .directory { return other.kind == .directory && mode == other.mode }
        return kind == other.kind && size == other.size && mode == other.mode && mtimeNs == other.mtimeNs
            && symlinkTarget == other.symlinkTarget
    }
}
