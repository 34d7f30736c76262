; Inno Setup script for Postbridge: a per-user installer, no administrator rights needed.
;
; Build the one-folder app first (dist\Postbridge\, see packaging\README.md), then from the
; repository root, with Inno Setup 6.3 or later:
;
;     iscc packaging\windows\postbridge.iss
;
; Output: dist\windows\postbridge-VERSION-windows-x64-setup.exe. The version is read from the
; built Postbridge.exe (the spec writes the package version into it); /DAppVersion=1.2.3 overrides.
; To sign the installer and uninstaller, define a sign tool on the command line (README):
;
;     iscc /DSign "/Spostbridgesign=signtool sign /fd sha256 /td sha256 /tr <timestamp URL> /a $f" ...
;
; What it does:
; * installs into %LOCALAPPDATA%\Programs\Postbridge (PrivilegesRequired=lowest);
; * a Start-menu shortcut carrying the AppUserModelID org.postbridge.Postbridge, the ID the app
;   claims at start (postbridge\app\appusermodel.py): Windows shows the app's notifications
;   only when a shortcut with that ID exists;
; * optional: start at login, the same HKCU Run value the app's own "Start at login" menu item
;   writes ("Postbridge" = "<exe>" --hidden), so the two always agree; a desktop shortcut;
; * the uninstaller removes the program, its shortcuts and the Run value, and keeps the user's
;   mail, settings, ledger, logs and passwords unless the user answers Yes to deleting them.

#define AppName "Postbridge"
#define AppExe "Postbridge.exe"
#define AppUserModelID "org.postbridge.Postbridge"
#define RepoDir AddBackslash(SourcePath) + "..\.."
#define DistDir RepoDir + "\dist\Postbridge"
#define RunKey "Software\Microsoft\Windows\CurrentVersion\Run"

#ifndef AppVersion
  #define AppVersion GetVersionNumbersString(DistDir + "\" + AppExe)
  #if AppVersion == ""
    #error dist\Postbridge\Postbridge.exe is missing or has no version: build it first (packaging\README.md)
  #endif
#endif

[Setup]
; The AppId identifies the installation for upgrades and uninstall: never change it.
AppId={{6A2461F3-83B9-4211-A12A-C768779635EB}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Postbridge
AppComments=Collects the office's mail from the ISP and delivers it to the office mail server.
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
DisableDirPage=auto
; Per user: {autopf} is %LOCALAPPDATA%\Programs, shortcuts and registry under HKCU.
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
WizardStyle=modern
SetupIconFile={#RepoDir}\resources\icons\postbridge.ico
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
OutputDir={#RepoDir}\dist\windows
OutputBaseFilename=postbridge-{#AppVersion}-windows-x64-setup
Compression=lzma2/max
SolidCompression=yes
; A running Postbridge holds its files open: ask it to close (Restart Manager) before replacing
; or removing them. Qt answers the end-session message by stopping after the current message.
CloseApplications=yes
RestartApplications=no
#ifdef Sign
SignTool=postbridgesign
SignedUninstaller=yes
#endif

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "startatlogin"; Description: "Start {#AppName} when I log in (in the notification area)"; GroupDescription: "Start:"
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#DistDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; An update replaces the whole bundle: files of the previous version must not linger.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; AppUserModelID: "{#AppUserModelID}"; Comment: "Collects the office's mail from the ISP"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; AppUserModelID: "{#AppUserModelID}"; Tasks: desktopicon

[Registry]
Root: HKCU; Subkey: "{#RunKey}"; ValueType: string; ValueName: "{#AppName}"; ValueData: """{app}\{#AppExe}"" --hidden"; Tasks: startatlogin; Flags: uninsdeletevalue

[Run]
Filename: "{app}\{#AppExe}"; Description: "Start {#AppName} now"; Flags: nowait postinstall skipifsilent

[Code]
const
  DataFolderName = '{#AppName}';

{ The Run value may have been written by the app's own menu item rather than by this installer,
  so Inno's log does not know it: remove it if it starts this installation's exe. }
procedure RemoveRunValue();
var
  Data: String;
begin
  if RegQueryStringValue(HKCU, '{#RunKey}', '{#AppName}', Data) then
    if Pos(Lowercase(ExpandConstant('{app}\{#AppExe}')), Lowercase(Data)) > 0 then
      RegDeleteValue(HKCU, '{#RunKey}', '{#AppName}');
end;

{ Passwords live in the Windows Credential Manager, stored by Python's keyring under the
  target "postbridge" (the first account) and "<account>@postbridge" (the others); cmdkey /list
  shows them as "<label>: LegacyGeneric:target=postbridge" (the label is translated). }
procedure DeleteStoredPasswords();
var
  ListFile, Line, Target, FullTarget: String;
  Lines: TArrayOfString;
  I, P, ResultCode: Integer;
begin
  ListFile := ExpandConstant('{tmp}\postbridge-credentials.txt');
  if not Exec(ExpandConstant('{cmd}'), '/c cmdkey /list > "' + ListFile + '"', '', SW_HIDE,
              ewWaitUntilTerminated, ResultCode) then
    Exit;
  if not LoadStringsFromFile(ListFile, Lines) then
    Exit;
  for I := 0 to GetArrayLength(Lines) - 1 do
  begin
    Line := Trim(Lines[I]);
    P := Pos('target=', Lowercase(Line));
    if P = 0 then
      Continue;
    Target := Copy(Line, P + Length('target='), Length(Line));
    FullTarget := Trim(Copy(Line, Pos(':', Line) + 1, Length(Line)));
    if (Lowercase(Target) = 'postbridge') or
       ((Length(Target) > 11) and (Lowercase(Copy(Target, Length(Target) - 10, 11)) = '@postbridge')) then
      Exec(ExpandConstant('{sys}\cmdkey.exe'), '/delete:' + FullTarget, '', SW_HIDE,
           ewWaitUntilTerminated, ResultCode);
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  DataDir: String;
begin
  if CurUninstallStep = usUninstall then
    RemoveRunValue();
  if CurUninstallStep = usPostUninstall then
  begin
    { platformdirs on Windows: config, data (ledger, spool, the default Maildir) and logs all
      live under %LOCALAPPDATA%\Postbridge. A data_dir set elsewhere in the config stays. }
    DataDir := ExpandConstant('{localappdata}\') + DataFolderName;
    if UninstallSilent() or not DirExists(DataDir) then
      Exit;
    if MsgBox('Also delete your Postbridge mail, settings, history and logs in' + #13#10 +
              DataDir + #13#10 + 'and the passwords Postbridge stored in Windows?' + #13#10#13#10 +
              'Choose No to keep them (a later install of Postbridge finds them again).',
              mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES then
    begin
      DeleteStoredPasswords();
      DelTree(DataDir, True, True, True);
    end;
  end;
end;
