import Foundation
import SyncGossip
import SyncWire

/// Everything the daemon is configured with, and the one place its defaults live: each is
/// documented here once, with its value and unit. `syncd daemon` starts from
/// `DaemonConfiguration(home:)` and overrides only the options given on its command line.
public struct DaemonConfiguration: Sendable, Equatable {
    public var home: Home
    public var network = Network()
    public var replication = Replication()
    public var scanning = Scanning()
    /// Session keepalive (Protocol/wire.md, "Keepalive"): each end pings every `interval`, default
    /// 2 s; a session that hears nothing for `timeout`, default 6 s, is closed and redialled.
    /// `timeout` must exceed `interval`.
    public var keepalive = SessionLiveness.Settings(interval: .seconds(2), timeout: .seconds(6))
    /// Membership timings: `SWIMSettings`' defaults, memberlist's LAN ones (documented there).
    public var gossip = SWIMSettings()
    public var lifecycle = Lifecycle()
    public var control = Control()
    public var http = HTTP()
    public var hooks = Hooks()
    /// Folders declared in the config file; see `Folder`. Default none.
    public var folders: [Folder] = []

    public init(home: Home) { self.home = home }

    /// Where the daemon listens and whom it meets.
    public struct Network: Sendable, Equatable {
        /// Address for gossip (UDP) and peer sessions (TCP), HOST:PORT; port 0 picks a free one.
        /// Default `0.0.0.0:7700`.
        public var listen = "0.0.0.0:7700"
        /// Seed members to join, HOST:PORT each. Default none.
        public var join: [String] = []
        /// Address announced to other members, HOST:PORT. Default nil: `listen`, or when `listen`
        /// is a wildcard the source address of this host's default route, else its first
        /// non-loopback IPv4 address (`Daemon.chooseAdvertisedHost`, which logs its choice).
        public var advertise: String?
        /// Cluster key, 32 bytes as hex or base64: gossip from members without it is dropped.
        /// Default nil (no key).
        public var gossipKey: String?
        /// UDP port of the LAN discovery beacon; nil turns the beacon off. Default 7701.
        public var beaconPort: Int? = 7701
        /// Offer per-chunk deflate on peer sessions (Protocol/wire.md, "Compression"): used on a
        /// session when both sides offer it, for a chunk only when it gets at least 10 % smaller.
        /// Default true.
        public var compression = true

        public init() {}
    }

    /// What replication keeps of what it replaces.
    public struct Replication: Sendable, Equatable {
        /// Days deleted and replaced files stay in a folder's `.syncd/trash/`. Default 30 days.
        public var trashDays: Double = 30
        /// Conflict copies kept per file; older ones move to the trash. Default 10.
        public var maxConflicts = 10

        public init() {}
    }

    /// The periodic full rescans behind inotify.
    public struct Scanning: Sendable, Equatable {
        /// Full rescan safety net, jittered ±10 %, in seconds. Default 3600 s (one hour).
        public var rescanInterval: TimeInterval = 3600
        /// Rescan period while inotify is unavailable or out of watches, in seconds. Default 60 s.
        public var degradedRescanInterval: TimeInterval = 60

        public init() {}
    }

    /// Starting and stopping.
    public struct Lifecycle: Sendable, Equatable {
        /// How long stopping a folder (`syncd remove`, shutdown) waits for its apply or scan in
        /// progress before going on without it, in seconds. Default 30 s.
        public var stopTimeout: TimeInterval = 30

        public init() {}
    }

    /// The control socket (`<home>/syncd.sock`), what every other `syncd` command talks to.
    public struct Control: Sendable, Equatable {
        /// A group (name or number) whose members may use the control socket — run `syncd
        /// status` and `syncd wait` from an application's own scripts without sudo: the socket is
        /// made that group's and 0660, and the home that group's and 0710 (members can reach the
        /// socket but not list the home; every file in it stays 0600). Default nil: the daemon's
        /// user only (socket 0600, home 0700).
        public var group: String?

        public init() {}
    }

    /// The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, `/api/status`, `/api/events` and the
    /// status page at `/` (Docs/Operations.md).
    public struct HTTP: Sendable, Equatable {
        /// Where it listens, HOST:PORT; port 0 picks a free one (`status` shows the bound address).
        /// Default nil: off.
        public var listen: String?
        /// The token every request but `/healthz` and `/readyz` must carry (`Authorization: Bearer`,
        /// or as the password of HTTP basic authentication, for browsers). Required when `listen` is
        /// not a loopback address; on loopback it is optional. Read from a file, never from the
        /// command line. Default nil.
        public var token: String?

        public init() {}

        /// Tokens shorter than this are refused (a guessable token on a network port is no lock).
        public static let minimumTokenLength = 16
    }

    /// Commands run for applications (Docs/Operations.md, "Hooks").
    public struct Hooks: Sendable, Equatable {
        /// Run by `/bin/sh -c` after each batch applied from a peer, with the changed paths on
        /// stdin and in the environment, in every folder that declares no `on_apply` of its own.
        /// Default nil: none.
        public var onApply: String?
        /// Seconds a hook may run before it is stopped (SIGTERM to its process group, SIGKILL 2 s
        /// later); a hook stopped so counts as failed. Default 60 s.
        public var timeout: TimeInterval = 60
        /// After a failed run, the next waits `backoff` seconds, doubled per consecutive failure
        /// up to `maxBackoff`; a failed run's paths are passed again with the next run. Default
        /// 1 s and 300 s.
        public var backoff: TimeInterval = 1
        public var maxBackoff: TimeInterval = 300

        public init() {}
    }

    /// A folder the configuration declares (`folders:` in the config file): added at start when
    /// it is not shared yet, left as it is when it is shared with the same secret, and an error
    /// when its path is shared with another secret. Folders shared with `syncd add` and not
    /// declared are left alone. Default none.
    public struct Folder: Sendable, Equatable {
        /// Absolute path of the folder; created if missing.
        public var path: String
        /// The folder secret's text (read-write, read-only or storage).
        public var secret: String
        /// Owner and modes of what replication places here; default none (the writer's modes,
        /// the daemon's user).
        public var placement = Placement()

        /// This folder's hook (`Hooks.onApply`), in place of the daemon-wide one. Default nil.
        public var onApply: String?

        public init(path: String, secret: String, placement: Placement = Placement(), onApply: String? = nil) {
            self.path = path; self.secret = secret; self.placement = placement; self.onApply = onApply
        }
    }

    /// How files and directories that arrive from peers are owned and moded, for applications
    /// that run as their own user (a Postgres standby, a git server): applied to the staged file
    /// before it is renamed into place, so it never appears with the wrong owner. Local files
    /// are never changed. Each field nil keeps today's behaviour for it. Setting an owner other
    /// than the daemon's user needs root (CAP_CHOWN); a group, membership of it.
    public struct Placement: Sendable, Equatable {
        /// User (name or number) that owns placed files, directories and symlinks. Default nil:
        /// the daemon's user.
        public var owner: String?
        /// Group (name or number) of placed files, directories and symlinks. Default nil: the
        /// daemon's primary group (or the directory's, when it is setgid).
        public var group: String?
        /// Permission bits of placed files, replacing the writer's; a file executable at the
        /// writer also gets x wherever this grants r (0640 → 0750). Default nil: the writer's mode.
        public var fileMode: UInt32?
        /// Permission bits of placed directories, replacing the writer's. Default nil: the writer's.
        public var directoryMode: UInt32?

        public init(owner: String? = nil, group: String? = nil, fileMode: UInt32? = nil, directoryMode: UInt32? = nil) {
            self.owner = owner; self.group = group; self.fileMode = fileMode; self.directoryMode = directoryMode
        }

        public var isEmpty: Bool { self == Placement() }
    }

    /// Why a configuration cannot run: `option` is the long option the value came from
    /// (`max-conflicts`), nil when no single option is to blame; `reason` says what is wrong
    /// with it. The description names the `syncd daemon` option; `syncd daemon` names the config
    /// file key or environment variable instead when the value came from there.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let option: String?
        public let reason: String
        public var description: String { option.map { "--\($0) \(reason)" } ?? reason }
        init(_ option: String?, _ reason: String) { self.option = option; self.reason = reason }
    }

    /// Throws the first value the daemon cannot run with. Nothing is created or bound: this runs
    /// before the home is touched.
    public func validate() throws {
        if Self.hostPort(network.listen, allowingPortZero: true) == nil {
            throw Invalid("listen", "\(network.listen) is not HOST:PORT")
        }
        for seed in network.join where Self.hostPort(seed, allowingPortZero: false) == nil {
            throw Invalid("join", "\(seed) is not HOST:PORT (a host name or IP address and a port from 1 to 65535)")
        }
        if let advertise = network.advertise, Self.hostPort(advertise, allowingPortZero: false) == nil {
            throw Invalid("advertise", "\(advertise) is not HOST:PORT (a host name or IP address and a port from 1 to 65535)")
        }
        do { _ = try GossipCipher(keyText: network.gossipKey) } catch {
            throw Invalid("gossip-key", "must be 32 bytes as hex or base64 (openssl rand -base64 32)")
        }
        if let port = network.beaconPort, !(1...65535).contains(port) { throw Invalid("beacon-port", "must be from 1 to 65535") }
        guard scanning.rescanInterval > 0 else { throw Invalid("rescan-interval", "must be positive") }
        guard replication.trashDays >= 0 else { throw Invalid("trash-days", "cannot be negative") }
        guard replication.maxConflicts >= 1 else { throw Invalid("max-conflicts", "must be at least 1") }
        guard keepalive.interval >= .milliseconds(10) else { throw Invalid("keepalive-interval", "must be at least 0.01") }
        guard keepalive.timeout > keepalive.interval else {
            throw Invalid("keepalive-timeout", "must be longer than the keepalive interval")
        }
        if let group = control.group, Self.groupID(group) == nil {
            throw Invalid("control-group", "\(group) is not a group on this host")
        }
        if let listen = http.listen {
            guard let endpoint = Self.hostPort(listen, allowingPortZero: true) else { throw Invalid("http", "\(listen) is not HOST:PORT") }
            if let token = http.token, token.count < HTTP.minimumTokenLength {
                throw Invalid("http-token-file", "holds a token shorter than \(HTTP.minimumTokenLength) characters (openssl rand -hex 24)")
            }
            if http.token == nil && !Self.isLoopback(endpoint.host) {
                throw Invalid("http", "\(listen) is not a loopback address: give a token with --http-token-file (or listen on 127.0.0.1)")
            }
        }
        guard hooks.timeout > 0 else { throw Invalid("on-apply-timeout", "must be positive") }
        var paths: Set<String> = []
        for folder in folders {
            guard folder.path.hasPrefix("/") else { throw Invalid(nil, "folder path must be absolute: \(folder.path)") }
            guard paths.insert(FolderPaths.normalize(folder.path)).inserted else {
                throw Invalid(nil, "folder \(folder.path) is declared twice")
            }
            let p = folder.placement
            if let owner = p.owner, Self.userID(owner) == nil { throw Invalid(nil, "folder \(folder.path): owner \(owner) is not a user on this host") }
            if let group = p.group, Self.groupID(group) == nil { throw Invalid(nil, "folder \(folder.path): group \(group) is not a group on this host") }
            for mode in [p.fileMode, p.directoryMode].compactMap({ $0 }) where mode > 0o7777 {
                throw Invalid(nil, "folder \(folder.path): mode \(String(mode, radix: 8)) is not a permission mode (0 to 7777, octal)")
            }
        }
    }

    /// A user's id from its name or number (nil when this host has no such user name).
    public static func userID(_ text: String) -> uid_t? {
        if let n = uid_t(text) { return n }
        var pw = passwd(), result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getpwnam_r(text, &pw, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return pw.pw_uid
    }

    /// A group's id from its name or number (nil when this host has no such group name).
    public static func groupID(_ text: String) -> gid_t? {
        if let n = gid_t(text) { return n }
        var gr = group(), result: UnsafeMutablePointer<group>?
        var buffer = [CChar](repeating: 0, count: 16384)
        guard getgrnam_r(text, &gr, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return gr.gr_gid

    }

    /// Whether `host` only reaches this machine: 127.0.0.0/8, ::1 or localhost.
    public static func isLoopback(_ host: String) -> Bool {
        let h = host.lowercased()
        return h == "localhost" || h == "::1" || h == "[::1]" || (h.hasPrefix("127.") && h.split(separator: ".").count == 4)
    }

    /// `HOST:PORT` or `[v6]:PORT` with a host that can be looked up (no spaces, nothing empty).
    static func hostPort(_ text: String, allowingPortZero: Bool) -> Endpoint? {
        guard let endpoint = Endpoint(text), allowingPortZero || endpoint.port != 0,
              !endpoint.host.contains(where: { $0.isWhitespace || $0 == "/" || $0 == "[" || $0 == "]" }),
              text.filter({ $0 == ":" }).count == 1 || text.hasPrefix("[") else { return nil }
        return endpoint
    }
}
