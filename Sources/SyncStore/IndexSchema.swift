import Foundation
import GRDB
import SyncCore

/// The index schema. Migrations are frozen once shipped: never edit one, add a new one.
///
/// - `folder`: one row per shared folder on this device. `secret` is the text form of the secret
///   this device holds (the home directory is 0700 and the database 0600). `sequence` is the
///   folder's local sequence: it increases by one for every change recorded in `file`.
/// - `file`: the latest known state of each path of a folder. Deleted paths stay as tombstones
///   (`deleted = 1`) so the deletion can be announced. `version` is the encoded version vector,
///   `sequence` the folder sequence at which this row last changed (so "everything after N" is an
///   index range scan), `chunks` the encoded chunk list (36 bytes per chunk: id, u32 LE size).
/// - `chunk`: where each chunk can be found locally (file row, byte offset), so a pull can copy a
///   chunk from any local file instead of fetching it (renames and moves cost nothing).
///
/// v2:
/// - `remote_manifest`: sealed manifests received from peers, verbatim (Protocol/manifest.md), once
///   their folder signature checked out. Every access kind keeps them: they are what a storage peer
///   serves, and the highest `last_sequence` per (origin, index id) is the rollback/replay floor
///   that survives a restart. `origin` and `index_id` are u64 values stored by bit pattern.
///   Read-write and read-only peers store a manifest once its entries are applied, so the floor
///   is "applied", and an interrupted apply is resent by the peer.
///
/// v3:
/// - `folder.index_id`: a random id of this folder's local index, announced in the session hello.
///
/// v4:
/// - `list_piece`: pieces of long chunk lists (Protocol/manifest.md), by keyed id, so a manifest
///   can name a big file's chunk list in a few dozen references and peers can fetch the pieces
///   they lack. Written by the sender when it seals and by a receiver once it verified them.
///
/// v5:
/// - `file.path` and `file.symlink_target` hold path text (`RelativePath`: ASCII, '%' and bytes
///   ≥ 0x80 written %XX), so names are bytes and compare byte for byte. Rows written before held
///   a name's UTF-8 and are rewritten; `folder.path` (the folder's absolute root) is not a
///   relative path and stays as it is.
///
/// v5-inode:
/// - `file_by_inode`: an index on `file(folder, inode)`, so a scan that finds a hard-linked file
///   changed can look up its other names without reading the folder's whole index.
///
/// v6-unknown:
/// - `folder.contents_unknown`: 1 while the folder's contents are unknown — its `.syncd` marker
///   was missing, a scan found most of its index gone at once, or its index was rebuilt. Scans
///   then never record a missing path as deleted (Docs/UserGuide.md, "A wiped or replaced folder").
/// - `missing_file`: index entries of paths such a scan found missing. They leave `file` (so they
///   are neither announced nor planned against: a peer's version of the path is needed again) but
///   keep their version and chunks here, to be pulled back from peers, to give a file that comes
///   back the history it had, or to be recorded as deleted when the user says so
///   (`syncd accept-deletions`). A path that gets a `file` row again leaves this table.
enum IndexSchema {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE folder (
                    id INTEGER PRIMARY KEY,
                    path TEXT NOT NULL UNIQUE,
                    folder_id TEXT NOT NULL UNIQUE,
                    access TEXT NOT NULL,
                    secret TEXT NOT NULL,
                    chunker_version INTEGER NOT NULL,
                    sequence INTEGER NOT NULL DEFAULT 0,
                    created_ns INTEGER NOT NULL
                ) STRICT;

                CREATE TABLE file (
                    id INTEGER PRIMARY KEY,
                    folder INTEGER NOT NULL REFERENCES folder(id) ON DELETE CASCADE,
                    path TEXT NOT NULL,
                    kind INTEGER NOT NULL,
                    size INTEGER NOT NULL,
                    mode INTEGER NOT NULL,
                    mtime_ns INTEGER NOT NULL,
                    ctime_ns INTEGER NOT NULL,
                    inode INTEGER NOT NULL,
                    symlink_target TEXT,
                    deleted INTEGER NOT NULL DEFAULT 0,
                    version BLOB NOT NULL,
                    sequence INTEGER NOT NULL,
                    chunks BLOB NOT NULL,
                    UNIQUE (folder, path)
                ) STRICT;
                CREATE INDEX file_by_sequence ON file(folder, sequence);

                CREATE TABLE chunk (
                    id BLOB NOT NULL,
                    file INTEGER NOT NULL REFERENCES file(id) ON DELETE CASCADE,
                    offset INTEGER NOT NULL,
                    PRIMARY KEY (id, file, offset)
                ) STRICT, WITHOUT ROWID;
                CREATE INDEX chunk_by_file ON chunk(file);
                """)
        }
        m.registerMigration("v2") { db in
            try db.execute(sql: """
                CREATE TABLE remote_manifest (
                    folder INTEGER NOT NULL REFERENCES folder(id) ON DELETE CASCADE,
                    origin INTEGER NOT NULL,
                    index_id INTEGER NOT NULL,
                    first_sequence INTEGER NOT NULL,
                    last_sequence INTEGER NOT NULL,
                    sealed BLOB NOT NULL,
                    received_ns INTEGER NOT NULL,
                    PRIMARY KEY (folder, origin, index_id, last_sequence)
                ) STRICT;
                """)
        }
        m.registerMigration("v3") { db in
            // index_id names this lifetime of the folder's local index (Protocol/wire.md, hello):
            // a peer that sees a new one forgets what it acknowledged of the old one.
            try db.execute(sql: "ALTER TABLE folder ADD COLUMN index_id INTEGER NOT NULL DEFAULT 0")
            try db.execute(sql: "UPDATE folder SET index_id = abs(random()) WHERE index_id = 0")
        }
        m.registerMigration("v4") { db in
            try db.execute(sql: """
                CREATE TABLE list_piece (
                    folder INTEGER NOT NULL REFERENCES folder(id) ON DELETE CASCADE,
                    id BLOB NOT NULL,
                    bytes BLOB NOT NULL,
                    PRIMARY KEY (folder, id)
                ) STRICT, WITHOUT ROWID;
                """)
        }
        m.registerMigration("v5") { db in
            // Only rows with a '%' or a non-ASCII byte change (byte and character lengths differ
            // exactly when a string has non-ASCII), and each rewritten path gets longer. Rewriting
            // the longest old paths first keeps UNIQUE(folder, path) intact at every step: a new
            // path cannot equal another rewritten one (the form is a bijection) nor an old path
            // still waiting (those are no longer than the old path it came from).
            let rows = try Row.fetchAll(db, sql: """
                SELECT id, CAST(path AS BLOB), CAST(symlink_target AS BLOB) FROM file
                WHERE instr(path, '%') > 0 OR length(CAST(path AS BLOB)) != length(path)
                   OR instr(symlink_target, '%') > 0 OR length(CAST(symlink_target AS BLOB)) != length(symlink_target)
                ORDER BY length(CAST(path AS BLOB)) DESC
                """)
            let update = try db.makeStatement(sql: "UPDATE file SET path = ?, symlink_target = ? WHERE id = ?")
            for row in rows {
                let id: Int64 = row[0], path: Data = row[1], target: Data? = row[2]
                try update.execute(arguments: [RelativePath.text(fromBytes: path), target.map { RelativePath.text(fromBytes: $0) }, id])
            }
        }
        m.registerMigration("v5-inode") { db in
            try db.execute(sql: "CREATE INDEX file_by_inode ON file(folder, inode)")
        }
        m.registerMigration("v6-unknown") { db in
            try db.execute(sql: """
                ALTER TABLE folder ADD COLUMN contents_unknown INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE missing_file (
                    folder INTEGER NOT NULL REFERENCES folder(id) ON DELETE CASCADE,
                    path TEXT NOT NULL,
                    kind INTEGER NOT NULL,
                    size INTEGER NOT NULL,
                    mode INTEGER NOT NULL,
                    mtime_ns INTEGER NOT NULL,
                    ctime_ns INTEGER NOT NULL,
                    inode INTEGER NOT NULL,
                    symlink_target TEXT,
                    version BLOB NOT NULL,
                    chunks BLOB NOT NULL,
                    PRIMARY KEY (folder, path)
                ) STRICT;
                """)
        }
        return m
    }
}
