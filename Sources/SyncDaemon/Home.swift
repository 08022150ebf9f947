import Foundation

/// The daemon's home directory and what lives in it.
///
/// Chosen, in order: `--home`, then `$SYNCD_HOME`, then `/var/lib/syncd` for root, otherwise
/// `$XDG_STATE_HOME/syncd` (default `~/.local/state/syncd`). Created 0700 on first use.
public struct Home: Sendable, Equatable {
    public let path: String

    public init(path: String) {
        self.path = path.count > 1 && path.hasSuffix("/") ? String(path.dropLast()) : path
    }

    public static func resolve(explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> Home {
        if let e = explicit, !e.isEmpty { return Home(path: absolute(e)) }
        if let e = environment["SYNCD_HOME"], !e.isEmpty { return Home(path: absolute(e)) }
        if geteuid() == 0 { return Home(path: "/var/lib/syncd") }
        if let x = environment["XDG_STATE_HOME"], !x.isEmpty { return Home(path: absolute(x) + "/syncd") }
        return Home(path: (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state/syncd")
    }

    public var indexPath: String { path + "/index.db" }
    public var deviceKeyPath: String { path + "/device.key" }
    public var controlSocketPath: String { path + "/syncd.sock" }
    public var lockPath: String { path + "/daemon.lock" }

    public func create() throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    }

    static func absolute(_ p: String) -> String {
        p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
    }
}
