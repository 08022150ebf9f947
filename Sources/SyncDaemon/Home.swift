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

    /// Creates the home 0700, whatever the umask; an existing home that others may enter (0755,
    /// say, made by an installer or a volume mount) is made 0700 too, since it holds the folder
    /// secrets and the control socket. Returns the mode it had when it was not 0700, and whether
    /// it could be changed (not when another user owns it). `controlGroup`: the home is that
    /// group's and 0710 instead (its members reach the control socket, nothing else).
    @discardableResult
    public func create(controlGroup: gid_t? = nil) throws -> (was: mode_t, changed: Bool)? {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        var st = stat()
        guard stat(path, &st) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let mode = st.st_mode & 0o7777
        if let group = controlGroup {
            guard st.st_gid != group || mode != 0o710 else { return nil }
            if st.st_gid != group, chown(path, uid_t.max, group) != 0 {
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EPERM)
            }
            let changed = chmod(path, 0o710) == 0
            return mode == 0o700 && changed ? nil : (mode, changed)
        }
        guard mode != 0o700 else { return nil }
        return (mode, chmod(path, 0o700) == 0)
    }

    static func absolute(_ p: String) -> String {
        p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
    }
}
