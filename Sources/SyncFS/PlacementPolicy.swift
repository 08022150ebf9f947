/// Owner and modes that placed files get (a folder's `owner`, `group`, `file_mode`, `dir_mode`;
/// Docs/Operations.md, "Owners and modes"), resolved to numbers. `FolderPlacer` applies it to the
/// staged object before renaming it into place, so a file never appears with the wrong owner or
/// mode; a directory it makes gets its owner at once (it is 0700 until filled) and its mode last.
public struct PlacementPolicy: Sendable, Equatable {
    public var uid: UInt32?
    public var gid: UInt32?
    /// Permission bits of placed files; a file executable at the writer gets x wherever this grants r.
    public var fileMode: UInt32?
    /// Permission bits of placed directories.
    public var directoryMode: UInt32?

    public init(uid: UInt32? = nil, gid: UInt32? = nil, fileMode: UInt32? = nil, directoryMode: UInt32? = nil) {
        self.uid = uid; self.gid = gid; self.fileMode = fileMode; self.directoryMode = directoryMode
    }

    public static let none = PlacementPolicy()

    public var changesOwner: Bool { uid != nil || gid != nil }

    /// The mode a file of `writerMode` is placed with.
    public func fileMode(for writerMode: UInt32) -> UInt32 {
        guard let fileMode else { return writerMode & 0o7777 }
        guard writerMode & 0o111 != 0 else { return fileMode & 0o7777 }
        return (fileMode | (fileMode & 0o444) >> 2) & 0o7777
    }

    /// The mode a directory of `writerMode` is placed with.
    public func directoryMode(for writerMode: UInt32) -> UInt32 { (directoryMode ?? writerMode) & 0o7777 }
}
