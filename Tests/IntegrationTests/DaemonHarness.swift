import Foundation
import XCTest

/// Runs the real `syncd` binary: a daemon process per home, and CLI commands against it.
///
/// Unprivileged mode (`unprivileged: true`): users run syncd as a service user, and root hides
/// permission bugs (root may set any socket option and read any file). When the test process is
/// root, this harness's daemon and CLI calls run as `serviceUser` through `setpriv`, and its root
/// and home belong to that user; files the test writes as root go through `write(_:to:)` or `own(_:)`
/// so the daemon can change them too. When the test process is not root it already is unprivileged
/// and runs everything as itself.
final class DaemonHarness {
    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["SYNCD_BIN"] { return b }
        // The test bundle lives next to the built products (.build/<config>/).
        let dir = URL(fileURLWithPath: CommandLine.arguments.first { $0.hasSuffix(".xctest") } ?? CommandLine.arguments[0])
            .deletingLastPathComponent()
        return dir.appendingPathComponent("syncd").path
    }

    /// nobody:nogroup on Debian: owns nothing, so every access it gets was granted on purpose.
    static let serviceUser: (uid: uid_t, gid: gid_t) = (65534, 65534)

    let root: String
    let home: String
    /// The user the daemon and CLI run as, when that is not the test process's own (root) user.
    let runAs: (uid: uid_t, gid: gid_t)?
    /// The syncd binary this harness runs: `binary`, or a copy under `root` when the service user
    /// cannot reach `binary` (a checkout under a 0700 directory, as CI's fresh clone as root may be).
    private let executable: String
    var process: Process?

    init(name: String = "t", unprivileged: Bool = false) throws {
        root = NSTemporaryDirectory() + "syncd-it-\(name)-\(UUID().uuidString.prefix(8))"
        home = root + "/home"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        runAs = unprivileged && geteuid() == 0 ? Self.serviceUser : nil
        executable = runAs == nil || Self.serviceUserCanRun(Self.binary) ? Self.binary : root + "/syncd"
        guard runAs != nil else { return }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        try own(root)
        if executable != Self.binary {
            try FileManager.default.copyItem(atPath: Self.binary, toPath: executable)
            chmod(executable, 0o755)
        }
        // The root's ancestors (TMPDIR) must be traversable too; say so rather than fail obscurely.
        let probe = try run(["/usr/bin/test", "-w", root, "-a", "-x", executable])
        guard probe.status == 0 else {
            throw HarnessError("uid \(Self.serviceUser.uid) cannot write \(root) or run \(executable); check TMPDIR's permissions")
        }
    }

    struct HarnessError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Whether the service user can run `path`: every directory above it traversable and the
    /// file executable. Asked of the kernel (access(2) in `test`) rather than derived from mode
    /// bits. Not by running `path` through setpriv: setpriv keeps root's capabilities until its
    /// execve, so that exec succeeds where the service user's own never would.
    static func serviceUserCanRun(_ path: String) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        p.arguments = setprivArguments(serviceUser) + ["/usr/bin/test", "-x", path]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }

    private static func setprivArguments(_ user: (uid: uid_t, gid: gid_t)) -> [String] {
        ["--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"]
    }

    /// A process that runs `command` (an absolute path and its arguments) as this harness's user.
    private func makeProcess(_ command: [String]) -> Process {
        let p = Process()
        if let user = runAs {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = Self.setprivArguments(user) + command
        } else {
            p.executableURL = URL(fileURLWithPath: command[0])
            p.arguments = Array(command.dropFirst())
        }
        return p
    }

    /// Hands `path` and everything below it (symlinks themselves, not their targets) to the
    /// daemon's user; nothing to do when the daemon runs as the test's own user.
    func own(_ path: String) throws {
        guard let user = runAs else { return }
        var paths = [path]
        if let below = FileManager.default.enumerator(atPath: path) {
            while let rel = below.nextObject() as? String { paths.append(path + "/" + rel) }
        }
        for p in paths where lchown(p, user.uid, user.gid) != 0 {
            throw HarnessError("lchown \(p): \(String(cString: strerror(errno)))")
        }
    }

    /// Writes `data` at `path` (parents created), all of it owned by the daemon's user: written
    /// beside `root`'s folders first and renamed in, so the daemon never sees it half-owned.
    func write(_ data: Data, to path: String) throws {
        let parent = (path as NSString).deletingLastPathComponent
        var missing: [String] = []
        var dir = parent
        while !FileManager.default.fileExists(atPath: dir) { missing.append(dir); dir = (dir as NSString).deletingLastPathComponent }
        for d in missing.reversed() {
            try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: false)
            try own(d)
        }
        let staged = root + "/.write-\(UUID().uuidString.prefix(8))"
        try data.write(to: URL(fileURLWithPath: staged))
        try own(staged)
        guard rename(staged, path) == 0 else { throw HarnessError("rename to \(path): \(String(cString: strerror(errno)))") }
    }

    deinit {
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: root)
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    @discardableResult
    func cli(_ args: [String], timeout: TimeInterval = 60) throws -> Result {
        try run([executable] + args)
    }

    /// A `syncd` command run as another user (`setpriv`, test process as root): uid, primary gid
    /// and supplementary groups exactly these. `executable` must be reachable by that user.
    func cli(as user: (uid: uid_t, gid: gid_t), groups: [gid_t] = [], executable: String, _ args: [String]) throws -> Result {
        let groupArguments = groups.isEmpty ? ["--clear-groups"] : ["--groups=" + groups.map(String.init).joined(separator: ",")]
        return try run(["/usr/bin/setpriv", "--reuid=\(user.uid)", "--regid=\(user.gid)"] + groupArguments + ["--", executable] + args)
    }

    /// Runs `command` as this harness's user with `SYNCD_HOME` set, and collects its output.
    private func run(_ command: [String]) throws -> Result {
        let p = makeProcess(command)
        var env = ProcessInfo.processInfo.environment
        env["SYNCD_HOME"] = home
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Daemons in tests keep the LAN beacon off (so parallel clusters never meet) unless asked.
    /// `umask`: the daemon starts under this umask (the test process's own otherwise).
    /// `environment`: variables set for the daemon on top of the test process's own; `prefix`: a
    /// command the daemon's runs under (absolute path first).
    func startDaemon(extra: [String] = [], beacon: Bool = false, listen: String = "127.0.0.1:0", umask: mode_t? = nil,
                     environment: [String: String] = [:], prefix: [String] = []) throws {
        var command = [executable, "daemon", "--home", home, "--listen", listen] + (beacon ? [] : ["--no-lan-beacon"]) + extra
        command = prefix + command   // nsenter into a network namespace, say
        if let umask { command = ["/bin/sh", "-c", "umask \(String(umask, radix: 8)) && exec \"$@\"", "sh"] + command }
        let p = makeProcess(command)
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        let log = root + "/daemon.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)!
        handle.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if [0, 2].contains(try cli(["status"]).status) { return }   // 2: up, a folder in error
            XCTAssertTrue(p.isRunning, "daemon exited early: \(daemonLog)")
            if !p.isRunning { throw CocoaError(.executableLoad) }
            usleep(50_000)
        }
        XCTFail("daemon did not open its control socket: \(daemonLog)")
    }

    var daemonLog: String { (try? String(contentsOfFile: root + "/daemon.log", encoding: .utf8)) ?? "" }

    func stopDaemon(signal sig: Int32 = SIGTERM) {
        guard let p = process else { return }
        kill(p.processIdentifier, sig)
        p.waitUntilExit()
        process = nil
    }

    /// Signals every daemon first and only then waits for them: they stop together, as a
    /// cluster does when its hosts are restarted at once.
    static func stopTogether(_ daemons: [DaemonHarness], signal sig: Int32 = SIGTERM) {
        for h in daemons { if let p = h.process { kill(p.processIdentifier, sig) } }
        for h in daemons { h.process?.waitUntilExit(); h.process = nil }
    }

    struct Status: Decodable {
        struct Folder: Decodable {
            var path: String
            var folderId: String
            var access: String
            var state: String
            var localFiles: Int
            var localDirectories: Int
            var localBytes: Int64
            var sequence: Int64
            var peers: [Peer]?
        }
        struct Peer: Decodable {
            var connected: Bool
        }
        var device: String
        var listen: String?
        var http: String?
        var folders: [Folder]
    }

    /// The session port the daemon bound (it listens on 127.0.0.1:0 in tests).
    func sessionPort() throws -> Int {
        let listen = try XCTUnwrap(status().listen)
        return try XCTUnwrap(Int(listen.split(separator: ":").last ?? ""))
    }

    func status() throws -> Status {
        let r = try cli(["status", "--json"])
        // 2: a folder is in error; the report is printed all the same.
        guard r.status == 0 || r.status == 2 else { throw NSError(domain: "status", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
        return try JSONDecoder().decode(Status.self, from: Data(r.stdout.utf8))
    }

    /// Polls `status --json` until `condition` holds for the first folder, or fails after `timeout`.
    @discardableResult
    func waitForFolder(timeout: TimeInterval = 1, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                       _ condition: (Status.Folder) -> Bool) throws -> Status.Folder? {
        let deadline = Date().addingTimeInterval(timeout)
        var last: Status.Folder?
        repeat {
            last = try status().folders.first
            if let f = last, condition(f) { return f }
            usleep(10_000)
        } while Date() < deadline
        XCTFail("\(what): not reflected within \(timeout) s; last status \(String(describing: last))", file: file, line: line)
        return nil
    }
}

/// Whether `condition` came true within `timeout` seconds (looked at every 20 ms, and once more at the end).
func poll(_ timeout: TimeInterval, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    repeat {
        if try condition() { return true }
        usleep(20_000)
    } while Date() < deadline
    return try condition()
}
