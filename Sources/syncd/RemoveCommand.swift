import ArgumentParser
import SyncDaemon

struct RemoveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Stop sharing a folder (its files stay).")

    @OptionGroup var home: HomeOption

    @Argument(help: "The shared folder.")
    var path: String

    func run() throws {
        _ = try call(ControlRequest(command: .remove, path: absolutePath(path)), home: home.resolved)
        print("Stopped sharing \(absolutePath(path)); its files are untouched.")
    }
}
