/// What kind of thing a path names. Raw values are stored in the index and on the wire: never renumber.
public enum FileKind: UInt8, Sendable, Codable, CaseIterable {
    case file = 0
    case directory = 1
    case symlink = 2
}

/// What the filesystem says about a path right now: enough to decide whether it changed
/// without reading it (size, mtime, ctime, inode, mode), as Syncthing and git do.
public struct FileMetadata: Hashable, Sendable {
    public var kind: FileKind
    public var size: Int64
    public var mode: UInt32          // permission bits only (07777)
    public var mtimeNs: Int64
    public var ctimeNs: Int64
    public var inode: UInt64
    /// Names the inode has (st_nlink). Local and momentary: never stored or sent, and 1 where
    /// unknown (metadata read back from the index or a manifest). A regular file with more than
    /// one name changes under all of them at once, so the scanner rescans the others.
    public var nlink: UInt32
    /// A link's target as path text (`RelativePath`): a target is bytes like a name.
    public var symlinkTarget: String?

    public init(kind: FileKind, size: Int64, mode: UInt32, mtimeNs: Int64, ctimeNs: Int64, inode: UInt64,
                nlink: UInt32 = 1, symlinkTarget: String? = nil) {
        self.kind = kind; self.size = size; self.mode = mode; self.mtimeNs = mtimeNs
        self.ctimeNs = ctimeNs; self.inode = inode; self.nlink = nlink; self.symlinkTarget = symlinkTarget
    }

    /// True when a rescan may skip re-reading the content.
    /// Directory times move whenever a child changes; they are not part of a directory's state.
    public func looksUnchanged(from old: FileMetadata) -> Bool {
        if kind == .directory { return old.kind == .directory && mode == old.mode && inode == old.inode }
        return kind == old.kind && size == old.size && mtimeNs == old.mtimeNs && ctimeNs == old.ctimeNs
            && inode == old.inode && mode == old.mode && symlinkTarget == old.symlinkTarget
    }
}

/// One entry of a folder's index: the latest known state of a path, local or announced.
public struct FileEntry: Hashable, Sendable {
    /// Path text (`RelativePath`).
    public var path: String
    public var metadata: FileMetadata
    public var deleted: Bool
    public var version: VersionVector
    /// The local sequence number at which this entry last changed.
    public var sequence: Int64
    public var chunks: [ChunkRef]

    public init(path: String, metadata: FileMetadata, deleted: Bool = false, version: VersionVector = VersionVector(),
                sequence: Int64 = 0, chunks: [ChunkRef] = []) {
        self.path = path; self.metadata = metadata; self.deleted = deleted; self.version = version
        self.sequence = sequence; self.chunks = chunks
    }

    public var kind: FileKind { metadata.kind }
    public var size: Int64 { metadata.size }
}

/// A change the scanner found in the local folder, ready to be recorded in the index.
public enum LocalChange: Hashable, Sendable {
    /// The path exists with this metadata (and, for regular files, these chunks).
    case present(path: String, metadata: FileMetadata, chunks: [ChunkRef])
    /// The path no longer exists.
    case removed(path: String)

    public var path: String {
        switch self {
        case .present(let path, _, _), .removed(let path): return path
        }
    }
}
