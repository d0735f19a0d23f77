"""The consent receipt's texts, per language.

These are legal information to the client (§67b(2) SGB X, GDPR Art. 7 and 13):
what the data is shared for, with whom, which data, the right to withdraw and
what refusing means. Every language must have every key with the same
placeholders; tests/test_receipts.py enforces that. When a text changes, bump
NOTICE_VERSION in domain/model.py: each consent records the version its client
was shown.

Legal citations (GDPR Art. 6(1)(a), §67b SGB X) stay as they are in every language.
"""

from __future__ import annotations

SUPPORTED_LANGUAGES = ("de", "en", "uk", "ar", "ru", "tr", "fa")

TEXTS: dict[str, dict[str, str]] = {
    "de": {
        "title": "Bestätigung Ihrer Einwilligung in die Datenweitergabe",
        "intro": "{collecting_org} hat Ihre Einwilligung am {granted_at} aufgenommen. Nummer der Einwilligung: {consent_id}.",
        "purposes": "Zweck: Ihre Daten dürfen für folgende Zwecke weitergegeben werden: {purposes}.",
        "recipients": "Empfänger: {recipients}.",
        "categories": "Diese Daten dürfen weitergegeben werden: {categories}.",
        "legal_basis": "Rechtsgrundlage: {legal_basis}.",
        "valid_until": "Die Einwilligung gilt bis zum {valid_until}.",
        "form": "Form der Einwilligung: {form}.",
        "language": "Sprache, in der Sie informiert wurden: {language}.",
        "interpreter": "Bei der Information hat Sie eine Dolmetscherin oder ein Dolmetscher unterstützt.",
        "health": "Die Einwilligung umfasst Angaben zu Ihrer Gesundheit. Diese Daten sind besonders geschützt "
        "(Art. 9 Datenschutz-Grundverordnung, DSGVO); Sie haben ausdrücklich eingewilligt.",
        "voluntary": "Ihre Einwilligung ist freiwillig.",
        "refusal": "Wenn Sie nicht einwilligen oder Ihre Einwilligung widerrufen, verlieren Sie keine Leistungen, auf die "
        "Sie einen gesetzlichen Anspruch haben. Die Stellen dürfen Ihre Daten dann aber nicht untereinander austauschen: "
        "Sie müssen sich gegebenenfalls selbst an sie wenden und Ihre Angaben dort erneut machen, und die Unterstützung "
        "kann länger dauern.",
        "withdraw": "Sie können diese Einwilligung jederzeit ohne Angabe von Gründen widerrufen, bei {collecting_org} oder "
        "bei jeder anderen beteiligten Stelle. Der Widerruf ist so einfach wie die Einwilligung. Er gilt ab dem Zeitpunkt "
        "des Widerrufs; eine Weitergabe, die vorher geschehen ist, bleibt rechtmäßig.",
        "after_withdrawal": "Stellen, die Ihre Daten bereits erhalten haben, werden über einen Widerruf informiert und "
        "dürfen die Daten für diesen Zweck nicht weiter verwenden.",
        "rights": "Sie haben außerdem das Recht auf Auskunft über Ihre Daten, auf ihre Berichtigung und Löschung, und Sie "
        "können sich bei einer Datenschutz-Aufsichtsbehörde beschweren.",
        "status": "Stand: {status}.",
        "withdrawn_on": "Sie haben diese Einwilligung am {withdrawn_at} widerrufen.",
        "expired_on": "Diese Einwilligung ist am {expired_at} abgelaufen.",
        "purpose.referral": "Vermittlung an ein Beratungs- oder Unterstützungsangebot",
        "purpose.case_coordination": "Abstimmung Ihres Falls zwischen den beteiligten Stellen",
        "purpose.contact_for_notifications": "Benachrichtigungen an Sie (zum Beispiel Erinnerungen an Fristen und Termine)",
        "purpose.interpreter_booking": "Buchung einer Dolmetscherin oder eines Dolmetschers",
        "category.identity": "Name und Geburtsdatum",
        "category.contact": "Kontaktdaten (E-Mail, Telefon, Sprachen)",
        "category.residence_status": "Aufenthaltsstatus und seine Gültigkeit",
        "category.needs": "Unterstützungsbedarf",
        "category.education_qualifications": "Schul- und Berufsausbildung, Abschlüsse",
        "category.health": "Angaben zur Gesundheit",
        "form.written": "schriftlich",
        "form.electronic": "elektronisch",
        "form.oral": "mündlich (mit dokumentiertem Grund)",
        "status.active": "gültig",
        "status.withdrawn": "widerrufen",
        "status.expired": "abgelaufen",
    },
    "en": {
        "title": "Receipt for your consent to data sharing",
        "intro": "Your consent was recorded by {collecting_org} on {granted_at}. Consent number: {consent_id}.",
        "purposes": "Purpose: your data may be shared for the following purposes: {purposes}.",
        "recipients": "Recipients: {recipients}.",
        "categories": "Data that may be shared: {categories}.",
        "legal_basis": "Legal basis: {legal_basis}.",
        "valid_until": "This consent is valid until {valid_until}.",
        "form": "Form of consent: {form}.",
        "language": "Language in which you were informed: {language}.",
        "interpreter": "An interpreter helped you when you were informed.",
        "health": "This consent includes information about your health. These data are specially protected "
        "(Art. 9 of the EU General Data Protection Regulation, GDPR); you consented to this explicitly.",
        "voluntary": "Your consent is voluntary.",
        "refusal": "If you do not consent or withdraw your consent, you will not lose any benefits or services you are "
        "legally entitled to. The organisations may then not exchange your data with each other, however: you may have to "
        "contact them yourself and give your information again, and support may take longer.",
        "withdraw": "You can withdraw this consent at any time without giving reasons, at {collecting_org} or at any other "
        "organisation taking part. Withdrawing is as easy as consenting. It takes effect from the moment you withdraw; "
        "data shared before then was shared lawfully.",
        "after_withdrawal": "Organisations that already received your data will be told if you withdraw, and may no longer "
        "use the data for this purpose.",
        "rights": "You also have the right to access your data, to have it corrected and erased, and to complain to a data "
        "protection supervisory authority.",
        "status": "Status: {status}.",
        "withdrawn_on": "You withdrew this consent on {withdrawn_at}.",
        "expired_on": "This consent expired on {expired_at}.",
        "purpose.referral": "referral to a counselling or support service",
        "purpose.case_coordination": "coordination of your case between the organisations taking part",
        "purpose.contact_for_notifications": "notifications to you (for example reminders of deadlines and appointments)",
        "purpose.interpreter_booking": "booking an interpreter",
        "category.identity": "name and date of birth",
        "category.contact": "contact details (e-mail, telephone, languages)",
        "category.residence_status": "residence status and how long it is valid",
        "category.needs": "support needs",
        "category.education_qualifications": "school and vocational education, qualifications",
        "category.health": "information about your health",
        "form.written": "written",
        "form.electronic": "electronic",
        "form.oral": "oral (with a documented reason)",
        "status.active": "valid",
        "status.withdrawn": "withdrawn",
        "status.expired": "expired",
    },
    "uk": {
        "title": "Підтвердження вашої згоди на передачу даних",
        "intro": "Вашу згоду зафіксовано {granted_at} в організації {collecting_org}. Номер згоди: {consent_id}.",
        "purposes": "Мета: ваші дані можуть передаватися для таких цілей: {purposes}.",
        "recipients": "Одержувачі: {recipients}.",
        "categories": "Можуть передаватися такі дані: {categories}.",
        "legal_basis": "Правова підстава: {legal_basis}.",
        "valid_until": "Згода діє до {valid_until}.",
        "form": "Форма згоди: {form}.",
        "language": "Мова, якою вас поінформували: {language}.",
        "interpreter": "Під час надання інформації вам допомагав перекладач.",
        "health": "Згода охоплює відомості про ваше здоров'я. Ці дані мають особливий захист (ст. 9 Загального регламенту "
        "ЄС про захист даних, GDPR); ви надали на це чітку згоду.",
        "voluntary": "Ваша згода є добровільною.",
        "refusal": "Якщо ви не дасте згоди або відкличете її, ви не втратите жодних виплат чи послуг, на які маєте право за "
        "законом. Але тоді організації не зможуть обмінюватися вашими даними: можливо, вам доведеться самостійно "
        "звертатися до них і знову надавати відомості, і допомога може тривати довше.",
        "withdraw": "Ви можете будь-коли відкликати цю згоду без пояснення причин — в організації {collecting_org} або в "
        "будь-якій іншій організації-учасниці. Відкликати згоду так само просто, як і надати її. Відкликання діє з моменту, "
        "коли ви про нього заявили; передача даних, що відбулася раніше, залишається законною.",
        "after_withdrawal": "Організації, які вже отримали ваші дані, будуть повідомлені про відкликання і більше не "
        "зможуть використовувати ці дані з цією метою.",
        "rights": "Ви також маєте право на доступ до своїх даних, їх виправлення та видалення, а також право подати скаргу "
        "до наглядового органу із захисту даних.",
        "status": "Статус: {status}.",
        "withdrawn_on": "Ви відкликали цю згоду {withdrawn_at}.",
        "expired_on": "Строк дії цієї згоди закінчився {expired_at}.",
        "purpose.referral": "направлення до консультаційної чи допоміжної служби",
        "purpose.case_coordination": "узгодження вашої справи між організаціями-учасницями",
        "purpose.contact_for_notifications": "повідомлення для вас (наприклад, нагадування про строки та зустрічі)",
        "purpose.interpreter_booking": "замовлення перекладача",
        "category.identity": "ім'я та дата народження",
        "category.contact": "контактні дані (електронна пошта, телефон, мови)",
        "category.residence_status": "статус перебування та строк його дії",
        "category.needs": "потреби в підтримці",
        "category.education_qualifications": "шкільна та професійна освіта, кваліфікації",
        "category.health": "відомості про здоров'я",
        "form.written": "письмова",
        "form.electronic": "електронна",
        "form.oral": "усна (із задокументованою причиною)",
        "status.active": "чинна",
        "status.withdrawn": "відкликана",
        "status.expired": "строк дії закінчився",
    },
    "ar": {
        "title": "إيصال موافقتك على مشاركة البيانات",
        "intro": "سُجِّلت موافقتك لدى {collecting_org} بتاريخ {granted_at}. رقم الموافقة: {consent_id}.",
        "purposes": "الغرض: يجوز مشاركة بياناتك للأغراض التالية: {purposes}.",
        "recipients": "الجهات المستلِمة: {recipients}.",
        "categories": "البيانات التي يجوز مشاركتها: {categories}.",
        "legal_basis": "الأساس القانوني: {legal_basis}.",
        "valid_until": "تسري هذه الموافقة حتى {valid_until}.",
        "form": "شكل الموافقة: {form}.",
        "language": "اللغة التي قُدِّمت لك بها المعلومات: {language}.",
        "interpreter": "ساعدك مترجم عند تقديم المعلومات لك.",
        "health": "تشمل هذه الموافقة معلومات عن صحتك. وهذه بيانات تحظى بحماية خاصة (المادة 9 من اللائحة العامة لحماية "
        "البيانات في الاتحاد الأوروبي، GDPR)، وقد وافقت عليها صراحةً.",
        "voluntary": "موافقتك طوعية.",
        "refusal": "إذا لم توافق أو سحبت موافقتك، فلن تفقد أي مساعدات أو خدمات يحق لك الحصول عليها بموجب القانون. لكن لن "
        "يجوز للجهات حينئذٍ تبادل بياناتك فيما بينها: قد يتعين عليك التواصل معها بنفسك وتقديم معلوماتك من جديد، وقد يستغرق "
        "الدعم وقتًا أطول.",
        "withdraw": "يمكنك سحب هذه الموافقة في أي وقت ودون ذكر الأسباب، لدى {collecting_org} أو لدى أي جهة أخرى مشاركة. "
        "سحب الموافقة سهل تمامًا مثل منحها. ويسري السحب من لحظة إعلانه، وتبقى المشاركة التي تمت قبل ذلك مشروعة.",
        "after_withdrawal": "إذا سحبت موافقتك، فسيتم إبلاغ الجهات التي تلقت بياناتك بالفعل، ولن يجوز لها بعد ذلك استخدام "
        "هذه البيانات لهذا الغرض.",
        "rights": "ولك أيضًا الحق في الاطلاع على بياناتك وتصحيحها وحذفها، والحق في تقديم شكوى إلى هيئة رقابية مختصة بحماية "
        "البيانات.",
        "status": "الحالة: {status}.",
        "withdrawn_on": "لقد سحبت هذه الموافقة بتاريخ {withdrawn_at}.",
        "expired_on": "انتهت صلاحية هذه الموافقة بتاريخ {expired_at}.",
        "purpose.referral": "الإحالة إلى خدمة استشارية أو خدمة دعم",
        "purpose.case_coordination": "تنسيق ملفك بين الجهات المشاركة",
        "purpose.contact_for_notifications": "إرسال إشعارات إليك (مثل التذكير بالمهل والمواعيد)",
        "purpose.interpreter_booking": "حجز مترجم",
        "category.identity": "الاسم وتاريخ الميلاد",
        "category.contact": "بيانات الاتصال (البريد الإلكتروني، الهاتف، اللغات)",
        "category.residence_status": "وضع الإقامة ومدة صلاحيتها",
        "category.needs": "احتياجات الدعم",
        "category.education_qualifications": "التعليم المدرسي والمهني والمؤهلات",
        "category.health": "معلومات عن صحتك",
        "form.written": "كتابية",
        "form.electronic": "إلكترونية",
        "form.oral": "شفهية (مع سبب موثَّق)",
        "status.active": "سارية",
        "status.withdrawn": "مسحوبة",
        "status.expired": "منتهية الصلاحية",
    },
    "ru": {
        "title": "Подтверждение вашего согласия на передачу данных",
        "intro": "Ваше согласие зафиксировано {granted_at} в организации {collecting_org}. Номер согласия: {consent_id}.",
        "purposes": "Цель: ваши данные могут передаваться для следующих целей: {purposes}.",
        "recipients": "Получатели: {recipients}.",
        "categories": "Могут передаваться следующие данные: {categories}.",
        "legal_basis": "Правовое основание: {legal_basis}.",
        "valid_until": "Согласие действует до {valid_until}.",
        "form": "Форма согласия: {form}.",
        "language": "Язык, на котором вас проинформировали: {language}.",
        "interpreter": "При предоставлении информации вам помогал переводчик.",
        "health": "Согласие распространяется на сведения о вашем здоровье. Эти данные находятся под особой защитой "
        "(ст. 9 Общего регламента ЕС по защите данных, GDPR); вы дали на это явное согласие.",
        "voluntary": "Ваше согласие является добровольным.",
        "refusal": "Если вы не дадите согласие или отзовёте его, вы не потеряете никаких выплат или услуг, на которые "
        "имеете право по закону. Но тогда организации не смогут обмениваться вашими данными: возможно, вам придётся "
        "самостоятельно обращаться к ним и заново предоставлять сведения, и помощь может занять больше времени.",
        "withdraw": "Вы можете в любое время отозвать это согласие без объяснения причин — в организации {collecting_org} "
        "или в любой другой участвующей организации. Отозвать согласие так же просто, как и дать его. Отзыв действует с "
        "момента, когда вы о нём заявили; передача данных, произошедшая раньше, остаётся законной.",
        "after_withdrawal": "Организации, которые уже получили ваши данные, будут уведомлены об отзыве и больше не смогут "
        "использовать эти данные для этой цели.",
        "rights": "Вы также имеете право на доступ к своим данным, их исправление и удаление, а также право подать жалобу "
        "в надзорный орган по защите данных.",
        "status": "Статус: {status}.",
        "withdrawn_on": "Вы отозвали это согласие {withdrawn_at}.",
        "expired_on": "Срок действия этого согласия истёк {expired_at}.",
        "purpose.referral": "направление в консультационную или вспомогательную службу",
        "purpose.case_coordination": "согласование вашего дела между участвующими организациями",
        "purpose.contact_for_notifications": "уведомления для вас (например, напоминания о сроках и встречах)",
        "purpose.interpreter_booking": "заказ переводчика",
        "category.identity": "имя и дата рождения",
        "category.contact": "контактные данные (электронная почта, телефон, языки)",
        "category.residence_status": "статус пребывания и срок его действия",
        "category.needs": "потребности в поддержке",
        "category.education_qualifications": "школьное и профессиональное образование, квалификации",
        "category.health": "сведения о здоровье",
        "form.written": "письменная",
        "form.electronic": "электронная",
        "form.oral": "устная (с задокументированной причиной)",
        "status.active": "действует",
        "status.withdrawn": "отозвано",
        "status.expired": "срок действия истёк",
    },
    "tr": {
        "title": "Verilerin paylaşılmasına verdiğiniz rızanın belgesi",
        "intro": "Rızanız {granted_at} tarihinde {collecting_org} tarafından kayda alındı. Rıza numarası: {consent_id}.",
        "purposes": "Amaç: verileriniz şu amaçlarla paylaşılabilir: {purposes}.",
        "recipients": "Alıcılar: {recipients}.",
        "categories": "Paylaşılabilecek veriler: {categories}.",
        "legal_basis": "Hukuki dayanak: {legal_basis}.",
        "valid_until": "Bu rıza {valid_until} tarihine kadar geçerlidir.",
        "form": "Rızanın şekli: {form}.",
        "language": "Size bilgi verilen dil: {language}.",
        "interpreter": "Size bilgi verilirken bir tercüman yardımcı oldu.",
        "health": "Bu rıza sağlığınızla ilgili bilgileri de kapsar. Bu veriler özel olarak korunur (AB Genel Veri Koruma "
        "Tüzüğü, GDPR, madde 9); bunun için açıkça rıza verdiniz.",
        "voluntary": "Rızanız gönüllüdür.",
        "refusal": "Rıza vermezseniz veya rızanızı geri alırsanız, yasal olarak hak sahibi olduğunuz hiçbir yardımı veya "
        "hizmeti kaybetmezsiniz. Ancak kurumlar bu durumda verilerinizi birbirleriyle paylaşamaz: kurumlara kendiniz "
        "başvurup bilgilerinizi yeniden vermeniz gerekebilir ve destek daha uzun sürebilir.",
        "withdraw": "Bu rızayı istediğiniz zaman, gerekçe göstermeden {collecting_org} kurumunda veya katılan başka herhangi "
        "bir kurumda geri alabilirsiniz. Rızayı geri almak, vermek kadar kolaydır. Geri alma, bildirdiğiniz andan itibaren "
        "geçerlidir; o zamana kadar yapılan paylaşım hukuka uygun kalır.",
        "after_withdrawal": "Rızanızı geri alırsanız, verilerinizi daha önce almış olan kurumlara bu bildirilir ve bu "
        "kurumlar verileri bu amaçla artık kullanamaz.",
        "rights": "Ayrıca verilerinize erişme, bunları düzelttirme ve sildirme hakkınız ile bir veri koruma denetim "
        "makamına şikâyette bulunma hakkınız vardır.",
        "status": "Durum: {status}.",
        "withdrawn_on": "Bu rızayı {withdrawn_at} tarihinde geri aldınız.",
        "expired_on": "Bu rızanın süresi {expired_at} tarihinde doldu.",
        "purpose.referral": "bir danışmanlık veya destek hizmetine yönlendirme",
        "purpose.case_coordination": "dosyanızın katılan kurumlar arasında koordinasyonu",
        "purpose.contact_for_notifications": "size bildirim gönderilmesi (örneğin süre ve randevu hatırlatmaları)",
        "purpose.interpreter_booking": "tercüman ayarlanması",
        "category.identity": "ad, soyad ve doğum tarihi",
        "category.contact": "iletişim bilgileri (e-posta, telefon, diller)",
        "category.residence_status": "oturum durumu ve geçerlilik süresi",
        "category.needs": "destek ihtiyaçları",
        "category.education_qualifications": "okul ve meslek eğitimi, nitelikler",
        "category.health": "sağlığınızla ilgili bilgiler",
        "form.written": "yazılı",
        "form.electronic": "elektronik",
        "form.oral": "sözlü (belgelenmiş gerekçeyle)",
        "status.active": "geçerli",
        "status.withdrawn": "geri alındı",
        "status.expired": "süresi doldu",
    },
    "fa": {
        "title": "رسید رضایت شما برای به اشتراک گذاشتن اطلاعات",
        "intro": "رضایت شما در تاریخ {granted_at} نزد {collecting_org} ثبت شد. شمارهٔ رضایت: {consent_id}.",
        "purposes": "هدف: اطلاعات شما می‌تواند برای این اهداف به اشتراک گذاشته شود: {purposes}.",
        "recipients": "دریافت‌کنندگان: {recipients}.",
        "categories": "اطلاعاتی که می‌تواند به اشتراک گذاشته شود: {categories}.",
        "legal_basis": "مبنای حقوقی: {legal_basis}.",
        "valid_until": "این رضایت تا تاریخ {valid_until} معتبر است.",
        "form": "شکل رضایت: {form}.",
        "language": "زبانی که اطلاعات به آن به شما داده شد: {language}.",
        "interpreter": "هنگام ارائهٔ اطلاعات، یک مترجم به شما کمک کرد.",
        "health": "این رضایت شامل اطلاعات مربوط به سلامت شما نیز می‌شود. این اطلاعات از حمایت ویژه برخوردارند "
        "(مادهٔ ۹ مقررات عمومی حفاظت از داده‌های اتحادیهٔ اروپا، GDPR) و شما صراحتاً با آن موافقت کرده‌اید.",
        "voluntary": "رضایت شما داوطلبانه است.",
        "refusal": "اگر رضایت ندهید یا رضایت خود را پس بگیرید، هیچ کمک یا خدمتی را که طبق قانون حق دریافت آن را دارید از "
        "دست نمی‌دهید. اما در این صورت سازمان‌ها نمی‌توانند اطلاعات شما را با یکدیگر به اشتراک بگذارند: ممکن است لازم "
        "باشد خودتان به آن‌ها مراجعه کنید و اطلاعاتتان را دوباره ارائه دهید، و دریافت کمک ممکن است بیشتر طول بکشد.",
        "withdraw": "شما می‌توانید این رضایت را هر زمان و بدون ذکر دلیل، نزد {collecting_org} یا هر سازمان مشارکت‌کنندهٔ "
        "دیگری پس بگیرید. پس گرفتن رضایت به همان آسانیِ دادن آن است. پس گرفتن رضایت از همان لحظه‌ای که اعلام می‌کنید "
        "اعمال می‌شود؛ اشتراک‌گذاری‌ای که پیش از آن انجام شده قانونی باقی می‌ماند.",
        "after_withdrawal": "اگر رضایت خود را پس بگیرید، به سازمان‌هایی که اطلاعات شما را قبلاً دریافت کرده‌اند اطلاع "
        "داده می‌شود و آن‌ها دیگر نمی‌توانند از این اطلاعات برای این هدف استفاده کنند.",
        "rights": "همچنین حق دارید به اطلاعات خود دسترسی داشته باشید، اصلاح یا حذف آن‌ها را بخواهید، و به یک مرجع نظارتی "
        "حفاظت از داده‌ها شکایت کنید.",
        "status": "وضعیت: {status}.",
        "withdrawn_on": "شما این رضایت را در تاریخ {withdrawn_at} پس گرفتید.",
        "expired_on": "اعتبار این رضایت در تاریخ {expired_at} به پایان رسید.",
        "purpose.referral": "ارجاع به یک خدمت مشاوره یا حمایتی",
        "purpose.case_coordination": "هماهنگی پروندهٔ شما میان سازمان‌های مشارکت‌کننده",
        "purpose.contact_for_notifications": "ارسال اطلاعیه برای شما (مثلاً یادآوری مهلت‌ها و قرارها)",
        "purpose.interpreter_booking": "رزرو مترجم",
        "category.identity": "نام و تاریخ تولد",
        "category.contact": "اطلاعات تماس (ایمیل، تلفن، زبان‌ها)",
        "category.residence_status": "وضعیت اقامت و مدت اعتبار آن",
        "category.needs": "نیازهای حمایتی",
        "category.education_qualifications": "تحصیلات مدرسه‌ای و حرفه‌ای، مدارک",
        "category.health": "اطلاعات مربوط به سلامت شما",
        "form.written": "کتبی",
        "form.electronic": "الکترونیکی",
        "form.oral": "شفاهی (با دلیل مستند)",
        "status.active": "معتبر",
        "status.withdrawn": "پس گرفته شده",
        "status.expired": "منقضی شده",
    },
}
