import ArgumentParser
import Foundation
import SyncDaemon

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Show the daemon's folders and their state.")

    @OptionGroup var home: HomeOption

    @Argument(help: "Only this folder.")
    var path: String?

    @Flag(help: "Machine-readable output.")
    var json = false

    func run() throws {
        let response = try call(ControlRequest(command: .status, path: path.map(absolutePath)), home: home.resolved)
        guard let status = response.status else { throw CLIError("the daemon sent no status") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(status), as: UTF8.self))
            return
        }
        print("device \(status.device)  (syncd \(status.version))")
        if status.folders.isEmpty { print("no folders; share one with `syncd add PATH --secret`") }
        for f in status.folders {
            print("\(f.path)  [\(f.access)]  \(f.state)\(f.error.map { ": \($0)" } ?? "")")
            print("  folder \(f.folderId)")
            print("  \(f.localFiles) files, \(f.localDirectories) directories, \(f.localBytes) bytes, sequence \(f.sequence)\(f.watching ? "" : ", not watching (periodic rescans)")")
            if let failing = f.pullError { print("  not applied (retrying): \(failing)") }
        }
    }
}
