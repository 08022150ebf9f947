#if canImport(Glibc)
import Glibc
#endif
import Logging
import SyncCore

/// What the watcher hands to its owner: paths (path text, `RelativePath`) to rescan (each
/// recursively if a directory), or `rescanAll` when events were lost (queue overflow, the root itself moved).
public struct WatchBatch: Sendable, Equatable {
    public var paths: Set<String> = []
    public var rescanAll = false
    public var isEmpty: Bool { paths.isEmpty && !rescanAll }

    public init(paths: Set<String> = [], rescanAll: Bool = false) {
        self.paths = paths
        self.rescanAll = rescanAll
    }
}

/// Recursive inotify watcher for one folder, on its own thread.
///
/// - Watches every directory (not `.syncd/` nor ignored ones); directories created or moved in
///   later get watches at once and are reported whole, so files written before the watch existed
///   are found by the scan.
/// - Prefers IN_CLOSE_WRITE: a file that is only IN_MODIFY'd or IN_CREATE'd (still being written)
///   is reported after `writeSettle` unless its close arrives first.
/// - Pairs IN_MOVED_FROM/IN_MOVED_TO by cookie to keep directory watches' paths right.
/// - Coalesces bursts: reports once events have been quiet for `quietPeriod` (at most `maxDelay`).
/// - IN_Q_OVERFLOW → rescanAll. ENOSPC on a watch → one clear warning, `isDegraded` becomes true,
///   and the owner falls back to periodic rescans.
public final class InotifyWatcher: @unchecked Sendable {
    public struct Options: Sendable {
        public var quietPeriod: Int64 = 10_000_000        // ns
        public var maxDelay: Int64 = 100_000_000          // ns
        public var writeSettle: Int64 = 1_000_000_000     // ns
        public init() {}
    }

    public let root: String
    private let options: Options
    private let logger: Logger
    private let isIgnoredDirectory: @Sendable (String) -> Bool
    private let handler: @Sendable (WatchBatch) -> Void

    private var fd: Int32 = -1
    private var stopPipe: [Int32] = [-1, -1]
    private var thread: pthread_t?
    private var pathByWatch: [Int32: String] = [:]
    private var watchByPath: [String: Int32] = [:]
    private let lock = Lock()
    private var degraded = false

    // Pending events, only touched on the watcher thread.
    private var ready = WatchBatch()
    private var firstEvent: Int64 = 0
    private var lastEvent: Int64 = 0
    private var settling: [String: Int64] = [:]       // path → deadline
    private var movedFrom: [UInt32: (path: String, isDir: Bool)] = [:]

    // Flush requests (`flush`): asked by any thread, answered by the watcher thread.
    private let flushCondition = WaitCondition()
    private var flushAsked: UInt64 = 0
    private var flushDone: UInt64 = 0

    public var isDegraded: Bool { lock.withLock { degraded } }
    public var watchCount: Int { lock.withLock { pathByWatch.count } }

    public init(root: String, options: Options = Options(), logger: Logger,
                isIgnoredDirectory: @escaping @Sendable (String) -> Bool = { _ in false },
                handler: @escaping @Sendable (WatchBatch) -> Void) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        self.options = options
        self.logger = logger
        self.isIgnoredDirectory = isIgnoredDirectory
        self.handler = handler
    }

    deinit { stop() }

    /// Sets up watches on the whole tree and starts the event thread.
    public func start() throws {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0 { throw POSIXFileSystem.error(root, "inotify_init1") }
        guard pipe(&stopPipe) == 0 else { throw POSIXFileSystem.error(root, "pipe") }
        for p in stopPipe { _ = fcntl(p, F_SETFD, FD_CLOEXEC) }
        addWatches(under: "")
        let box = Unmanaged.passRetained(self)
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            let watcher = Unmanaged<InotifyWatcher>.fromOpaque(arg!).takeRetainedValue()
            watcher.run()
            return nil
        }, box.toOpaque())
        if rc != 0 { box.release(); throw POSIXFileSystem.error(root, "pthread_create", rc) }
        thread = t
    }

    /// Reports at once everything the kernel has queued and every path still settling (a file
    /// created by `link()` or still open for writing counts as written now), and returns once
    /// the handler has had it — so a write that completed before this call is in the batch
    /// (`syncd wait`). False when the watcher does not answer within `timeout` seconds.
    public func flush(timeout: Double = 2) -> Bool {
        guard thread != nil else { return false }
        let ticket: UInt64 = flushCondition.withLock { flushAsked += 1; return flushAsked }
        var two: UInt8 = 2
        _ = write(stopPipe[1], &two, 1)
        return flushCondition.wait(timeout: timeout) { flushDone >= ticket }
    }

    public func stop() {
        guard let t = thread else { return }
        thread = nil
        var one: UInt8 = 1
        _ = write(stopPipe[1], &one, 1)
        pthread_join(t, nil)
        close(fd); close(stopPipe[0]); close(stopPipe[1])
        fd = -1
    }

    private static let mask: UInt32 = UInt32(IN_CLOSE_WRITE | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
        | IN_ATTRIB | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF) | UInt32(IN_ONLYDIR) | UInt32(IN_DONT_FOLLOW) | UInt32(IN_EXCL_UNLINK)

    /// Adds watches for `dir` and every directory below it.
    private func addWatches(under dir: String) {
        var stack = [dir]
        while let d = stack.popLast() {
            if !d.isEmpty && (FolderScanner.isStatePath(d) || isIgnoredDirectory(d)) { continue }
            let full = SystemPath.absolute(root: root, d)
            let wd = inotify_add_watch(fd, full, Self.mask)
            if wd < 0 {
                let e = errno
                if e == ENOSPC {
                    let first = lock.withLock { () -> Bool in defer { degraded = true }; return !degraded }
                    if first {
                        logger.warning("inotify watch limit reached: raise /proc/sys/fs/inotify/max_user_watches (e.g. `sysctl fs.inotify.max_user_watches=1048576`); falling back to periodic rescans", metadata: ["folder": "\(root)"])
                    }
                    return
                }
                if e != ENOENT && e != ENOTDIR {
                    logger.debug("inotify_add_watch \(root)/\(RelativePath.display(d)): \(String(cString: strerror(e)))")
                }
                continue
            }
            lock.withLock {
                if let old = pathByWatch[wd], old != d { watchByPath[old] = nil }
                pathByWatch[wd] = d
                watchByPath[d] = wd
            }
            for name in subdirectories(of: d, full) { stack.append(RelativePath.join(d, name)) }
        }
    }

    /// Names (path text) of the directories in `dir`, whose system path is `full`.
    private func subdirectories(of dir: String, _ full: [CChar]) -> [String] {
        guard let dp = opendir(full) else { return [] }
        defer { closedir(dp) }
        var out: [String] = []
        while let ent = readdir(dp) {
            let type = ent.pointee.d_type
            let name = SystemPath.text(of: ent)
            if name == "." || name == ".." { continue }
            if type == UInt8(DT_DIR) {
                out.append(name)
            } else if type == UInt8(DT_UNKNOWN) {
                var st = stat()
                if lstat(SystemPath.absolute(root: root, RelativePath.join(dir, name)), &st) == 0
                    && (st.st_mode & S_IFMT) == S_IFDIR { out.append(name) }
            }
        }
        return out
    }

    private func removeWatches(under dir: String) {
        lock.withLock {
            for (p, wd) in watchByPath where RelativePath.isWithin(p, dir) {
                inotify_rm_watch(fd, wd)
                watchByPath[p] = nil
                pathByWatch[wd] = nil
            }
        }
    }

    private func renameWatches(from old: String, to new: String) {
        lock.withLock {
            for (p, wd) in watchByPath where RelativePath.isWithin(p, old) {
                let moved = new + String(p.utf8.dropFirst(old.utf8.count))!
                watchByPath[p] = nil
                watchByPath[moved] = wd
                pathByWatch[wd] = moved
            }
        }
    }

    private static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    private func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0)]
        while true {
            let timeout = nextTimeoutMs()
            let rc = poll(&fds, 2, timeout)
            if rc < 0 && errno != EINTR { logger.error("inotify poll failed: \(String(cString: strerror(errno)))"); return }
            var flushing = false
            var asked: UInt64 = 0
            if fds[1].revents != 0 {
                var bytes = [UInt8](repeating: 0, count: 64)
                let n = read(stopPipe[0], &bytes, bytes.count)
                if n <= 0 || bytes[..<n].contains(1) { return }
                // Tickets asked so far, read before the queue is drained: a flush asked after this
                // point waits for the next round, so its writes are read too.
                asked = flushCondition.withLock { flushAsked }
                flushing = true
            }
            if flushing || (rc > 0 && fds[0].revents != 0) {
                while true {
                    let n = read(fd, buffer.baseAddress, buffer.count)
                    if n <= 0 { break }
                    parse(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                }
                finishMoves()
            }
            if flushing {
                for path in settling.keys { ready.paths.insert(path) }
                settling.removeAll()
                if !ready.isEmpty {
                    let batch = ready
                    ready = WatchBatch()
                    handler(batch)
                }
                flushCondition.withLock { flushDone = asked }
                flushCondition.broadcast()
            }
            deliverDue()
        }
    }

    private func nextTimeoutMs() -> Int32 {
        let now = Self.now()
        var deadline = Int64.max
        if !ready.isEmpty { deadline = min(lastEvent + options.quietPeriod, firstEvent + options.maxDelay) }
        if let s = settling.values.min() { deadline = min(deadline, s) }
        if deadline == Int64.max { return -1 }
        return Int32(clamping: max(0, (deadline - now + 999_999) / 1_000_000))
    }

    private func markReady(_ path: String) {
        let now = Self.now()
        if ready.isEmpty { firstEvent = now }
        lastEvent = now
        ready.paths.insert(path)
        settling[path] = nil
    }

    private func markRescanAll() {
        let now = Self.now()
        if ready.isEmpty { firstEvent = now }
        lastEvent = now
        ready.rescanAll = true
    }

    private func parse(_ bytes: UnsafeRawBufferPointer) {
        var at = 0
        let header = MemoryLayout<inotify_event>.size
        while at + header <= bytes.count {
            let wd = bytes.loadUnaligned(fromByteOffset: at, as: Int32.self)
            let mask = bytes.loadUnaligned(fromByteOffset: at + 4, as: UInt32.self)
            let cookie = bytes.loadUnaligned(fromByteOffset: at + 8, as: UInt32.self)
            let len = Int(bytes.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self))
            var name = ""
            if len > 0 {
                let raw = UnsafeRawBufferPointer(rebasing: bytes[(at + header)..<(at + header + len)])
                name = RelativePath.text(fromBytes: raw.prefix { $0 != 0 })  // bytes, not repaired UTF-8
            }
            at += header + len
            handle(wd: wd, mask: mask, cookie: cookie, name: name)
        }
    }

    private func handle(wd: Int32, mask: UInt32, cookie: UInt32, name: String) {
        if mask & UInt32(IN_Q_OVERFLOW) != 0 {
            logger.warning("inotify queue overflowed; rescanning the folder", metadata: ["folder": "\(root)"])
            markRescanAll()
            return
        }
        guard let dir = lock.withLock({ pathByWatch[wd] }) else { return }
        if mask & UInt32(IN_IGNORED) != 0 {
            lock.withLock {
                if pathByWatch[wd] == dir { pathByWatch[wd] = nil; if watchByPath[dir] == wd { watchByPath[dir] = nil } }
            }
            return
        }
        if name.isEmpty {  // an event on the watched directory itself
            if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF) != 0 && dir.isEmpty { markRescanAll() }
            if mask & UInt32(IN_ATTRIB) != 0 { markReady(dir) }
            return
        }
        let path = RelativePath.join(dir, name)
        if FolderScanner.isStatePath(path) { return }
        let isDir = mask & UInt32(IN_ISDIR) != 0

        if mask & UInt32(IN_MOVED_FROM) != 0 {
            movedFrom[cookie] = (path, isDir)
            markReady(path)
        } else if mask & UInt32(IN_MOVED_TO) != 0 {
            if isDir {
                if let from = movedFrom.removeValue(forKey: cookie), from.isDir {
                    renameWatches(from: from.path, to: path)
                } else {
                    addWatches(under: path)
                }
            } else {
                movedFrom[cookie] = nil
            }
            markReady(path)
        } else if mask & UInt32(IN_CREATE) != 0 {
            if isDir {
                addWatches(under: path)
                markReady(path)
            } else {
                var st = stat()
                if lstat(SystemPath.absolute(root: root, path), &st) == 0 && (st.st_mode & S_IFMT) == S_IFLNK {
                    markReady(path)  // symlinks are complete when created
                } else {
                    settle(path)     // wait for IN_CLOSE_WRITE (or settle: hard links, O_TMPFILE)
                }
            }
        } else if mask & UInt32(IN_CLOSE_WRITE) != 0 {
            markReady(path)
        } else if mask & UInt32(IN_MODIFY) != 0 {
            if !ready.paths.contains(path) { settle(path) }
        } else if mask & UInt32(IN_DELETE | IN_ATTRIB) != 0 {
            markReady(path)
        }
    }

    private func settle(_ path: String) {
        if settling[path] == nil { settling[path] = Self.now() + options.writeSettle }
    }

    /// A directory moved out of the tree leaves watches on a place we no longer sync.
    private func finishMoves() {
        for (_, from) in movedFrom where from.isDir { removeWatches(under: from.path) }
        movedFrom.removeAll()
    }

    private func deliverDue() {
        let now = Self.now()
        for (path, deadline) in settling where deadline <= now {
            settling[path] = nil
            if ready.isEmpty { firstEvent = now }
            lastEvent = min(lastEvent, now)
            ready.paths.insert(path)
        }
        guard !ready.isEmpty else { return }
        if now >= lastEvent + options.quietPeriod || now >= firstEvent + options.maxDelay {
            let batch = ready
            ready = WatchBatch()
            handler(batch)
        }
    }
}
