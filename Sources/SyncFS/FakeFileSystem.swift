import SyncCore

/// An in-memory filesystem for tests. Thread-safe; paths relative, "" is the root directory, in
/// path text like every path in syncd (`RelativePath`: "caf%C3%A9" is `café` in NFC), which it
/// checks so a test cannot pass a name the real filesystem would never return.
/// Each write bumps a fake clock so mtime/ctime change like on a real disk. Regular files may
/// have several names (`link`): a write or chmod through one shows under all, as on a real disk.
public final class FakeFileSystem: FileSystem, @unchecked Sendable {
    private struct Node {
        var metadata: FileMetadata
        var content: [UInt8] = []
    }

    private var nodes: [String: Node] = [:]
    private var clock: Int64 = 1_000_000_000
    private var nextInode: UInt64 = 2
    private let lock = Lock()
    /// Called after each read of a file; tests use it to modify a file while it is being hashed.
    public var onRead: ((String) -> Void)?

    public init() {
        nodes[""] = Node(metadata: FileMetadata(kind: .directory, size: 0, mode: 0o755, mtimeNs: clock, ctimeNs: clock, inode: 1))
    }

    /// Writes `content` in place (the inode stays, like `>`): every name of the file sees it.
    public func write(_ path: String, _ content: [UInt8], mode: UInt32 = 0o644) {
        precondition(RelativePath.isText(path), "not path text: \(path)")
        lock.withLock {
            makeParents(path)
            clock += 1000
            if let old = nodes[path], old.metadata.kind == .file {
                for name in names(of: old.metadata.inode) {
                    nodes[name]!.content = content
                    nodes[name]!.metadata.size = Int64(content.count)
                    nodes[name]!.metadata.mode = mode
                    nodes[name]!.metadata.mtimeNs = clock
                    nodes[name]!.metadata.ctimeNs = clock
                }
                return
            }
            nodes[path] = Node(metadata: FileMetadata(kind: .file, size: Int64(content.count), mode: mode,
                                                      mtimeNs: clock, ctimeNs: clock, inode: allocateInode()), content: content)
        }
    }

    /// `ln existing new`: one more name for a regular file (nothing happens for anything else).
    public func link(_ existing: String, _ new: String) {
        lock.withLock {
            guard let node = nodes[existing], node.metadata.kind == .file, nodes[new] == nil else { return }
            makeParents(new)
            clock += 1000
            nodes[new] = node
            for name in names(of: node.metadata.inode) {
                nodes[name]!.metadata.nlink += 1
                nodes[name]!.metadata.ctimeNs = clock
            }
        }
    }

    public func mkdir(_ path: String, mode: UInt32 = 0o755) {
        precondition(RelativePath.isText(path), "not path text: \(path)")
        lock.withLock {
            makeParents(path)
            clock += 1000
            if nodes[path] == nil {
                nodes[path] = Node(metadata: FileMetadata(kind: .directory, size: 0, mode: mode, mtimeNs: clock, ctimeNs: clock, inode: allocateInode()))
            }
        }
    }

    /// `target` is path text too (a link's target is bytes like a name).
    public func symlink(_ path: String, target: String) {
        precondition(RelativePath.isText(path) && RelativePath.isText(target), "not path text: \(path) -> \(target)")
        lock.withLock {
            makeParents(path)
            clock += 1000
            nodes[path] = Node(metadata: FileMetadata(kind: .symlink, size: Int64(RelativePath.bytes(target)!.count), mode: 0o777,
                                                      mtimeNs: clock, ctimeNs: clock, inode: allocateInode(), symlinkTarget: target))
        }
    }

    public func chmod(_ path: String, _ mode: UInt32) {
        lock.withLock {
            clock += 1000
            guard let node = nodes[path] else { return }
            for name in node.metadata.kind == .file ? names(of: node.metadata.inode) : [path] {
                nodes[name]!.metadata.mode = mode
                nodes[name]!.metadata.ctimeNs = clock
            }
        }
    }

    /// Removes a path and everything below it.
    public func remove(_ path: String) {
        lock.withLock {
            let gone = nodes.filter { RelativePath.isWithin($0.key, path) }
            nodes = nodes.filter { !RelativePath.isWithin($0.key, path) }
            unlinked(gone.values)
        }
    }

    public func rename(_ from: String, _ to: String) {
        precondition(RelativePath.isText(to), "not path text: \(to)")
        lock.withLock {
            var moved: [String: Node] = [:]
            for (p, n) in nodes where RelativePath.isWithin(p, from) {
                moved[to + String(p.utf8.dropFirst(from.utf8.count))!] = n
            }
            let replaced = nodes.filter { RelativePath.isWithin($0.key, to) && !RelativePath.isWithin($0.key, from) }
            nodes = nodes.filter { !RelativePath.isWithin($0.key, from) && !RelativePath.isWithin($0.key, to) }
            nodes.merge(moved) { $1 }
            unlinked(replaced.values)
        }
    }

    /// The names of regular file `inode` (caller holds the lock).
    private func names(of inode: UInt64) -> [String] {
        nodes.compactMap { $0.value.metadata.kind == .file && $0.value.metadata.inode == inode ? $0.key : nil }
    }

    /// The files that remain after names were removed lose one link per removed name.
    private func unlinked(_ removed: some Sequence<Node>) {
        for node in removed where node.metadata.kind == .file {
            let remaining = names(of: node.metadata.inode)
            if remaining.isEmpty { continue }
            clock += 1000
            for name in remaining {
                nodes[name]!.metadata.nlink -= 1
                nodes[name]!.metadata.ctimeNs = clock
            }
        }
    }

    public func metadata(_ path: String) throws -> FileMetadata? {
        lock.withLock { nodes[path]?.metadata }
    }

    public func list(_ directory: String) throws -> [String] {
        try lock.withLock {
            guard let d = nodes[directory] else {
                throw FileSystemError(path: directory, operation: "opendir", errno: 2, message: "No such file or directory")
            }
            guard d.metadata.kind == .directory else {
                throw FileSystemError(path: directory, operation: "opendir", errno: 20, message: "Not a directory")
            }
            return nodes.keys.filter { !$0.isEmpty && RelativePath.parent(of: $0) == directory }
                .map { String($0.split(separator: "/").last!) }
        }
    }

    public func openForReading(_ path: String) throws -> any FileReader {
        try lock.withLock {
            guard let n = nodes[path], n.metadata.kind == .file else {
                throw FileSystemError(path: path, operation: "open", errno: 2, message: "No such file or directory")
            }
            return Reader(fs: self, path: path, content: n.content, metadata: n.metadata)
        }
    }

    private func makeParents(_ path: String) {
        var parent = RelativePath.parent(of: path)
        var missing: [String] = []
        while !parent.isEmpty && nodes[parent] == nil {
            missing.append(parent)
            parent = RelativePath.parent(of: parent)
        }
        for p in missing.reversed() {
            nodes[p] = Node(metadata: FileMetadata(kind: .directory, size: 0, mode: 0o755, mtimeNs: clock, ctimeNs: clock, inode: allocateInode()))
        }
    }

    private func allocateInode() -> UInt64 {
        nextInode += 1
        return nextInode
    }

    fileprivate func current(_ path: String) -> FileMetadata? {
        lock.withLock { nodes[path]?.metadata }
    }

    /// Reads see the content as it was at open (like an unlinked-and-replaced file); fstat sees
    /// the current metadata, which is how a scanner notices a file that changed while hashed.
    private final class Reader: FileReader {
        let fs: FakeFileSystem
        let path: String
        let content: [UInt8]
        let opened: FileMetadata
        var offset = 0

        init(fs: FakeFileSystem, path: String, content: [UInt8], metadata: FileMetadata) {
            self.fs = fs; self.path = path; self.content = content; self.opened = metadata
        }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            let n = min(buffer.count, content.count - offset)
            if n > 0 {
                content.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress! + offset, byteCount: n) }
                offset += n
            }
            fs.onRead?(path)
            return n
        }

        func metadata() throws -> FileMetadata { fs.current(path) ?? opened }
        func close() {}
    }
}
